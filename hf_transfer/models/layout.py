"""Where the head is and how the backbone is layered, discovered from the model itself.

Strategies (freezing, layer-wise learning rates, gradual unfreezing) need the same two facts for
every architecture: which parameters form the new classification head, and the order of the
backbone's layers from the input up. timm models describe both (``pretrained_cfg['classifier']``,
``group_matcher``); transformers models via ``base_model_prefix`` and their layer ``ModuleList``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class ParameterLayout:
    """Parameter names of the head, and of the backbone grouped into layers (input first)."""

    layers: tuple[tuple[str, ...], ...]
    head: tuple[str, ...]
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Named parts for per-part learning rates (``strategy.learning_rates``); by default ``backbone`` and ``head``."""

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", {"backbone": self.backbone(), "head": self.head})

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def backbone(self) -> tuple[str, ...]:
        return tuple(name for layer in self.layers for name in layer)


def discover_layout(model: nn.Module) -> ParameterLayout:
    """A model that knows its own layout (several towers) says so; timm and transformers models are inspected."""
    if callable(getattr(model, "parameter_layout", None)):
        return model.parameter_layout()
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        return _timm_layout(timm_model, prefix="timm_model.")
    if hasattr(timm_model := model, "group_matcher") and hasattr(model, "pretrained_cfg"):
        return _timm_layout(timm_model, prefix="")
    return _transformers_layout(model)


def _classifier_prefixes(timm_model: nn.Module) -> tuple[str, ...]:
    classifier = (getattr(timm_model, "pretrained_cfg", None) or {}).get("classifier") or "classifier"
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    return tuple(f"{name}." for name in names)


def _timm_layout(timm_model: nn.Module, prefix: str) -> ParameterLayout:
    from timm.models import group_parameters

    head_prefixes = _classifier_prefixes(timm_model)
    groups = group_parameters(timm_model, timm_model.group_matcher(coarse=False))
    head, layers = [], []
    for names in groups.values():
        layer = []
        for name in names:
            (head if name.startswith(head_prefixes) else layer).append(prefix + name)
        if layer:
            layers.append(tuple(layer))
    return ParameterLayout(layers=tuple(layers), head=tuple(head))


def _transformers_layout(model: nn.Module) -> ParameterLayout:
    base_prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, base_prefix, None) if base_prefix else None
    if base is None and getattr(model, "base_model", None) is model:  # a bare encoder (a fused model's tower)
        base, base_prefix = model, ""
    if base is None:
        raise ValueError(f"{type(model).__name__} has no base model under '{base_prefix}'; cannot tell backbone from head.")
    dot = f"{base_prefix}." if base_prefix else ""
    blocks = max((m for m in base.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    block_prefix = next(f"{dot}{n}." for n, m in base.named_modules() if m is blocks) if blocks else None
    # BERT's pooler (dense + tanh over [CLS]) is the hidden layer of its classification head, as
    # ``classifier.dense`` is for RoBERTa; it belongs to the head so that every encoder probes alike.
    head_prefixes = (dot + "pooler.",)
    before, per_block, after, head = [], [[] for _ in range(len(blocks or []))], [], []
    for name, _ in model.named_parameters():
        if not name.startswith(dot) or name.startswith(head_prefixes):
            head.append(name)
        elif block_prefix and name.startswith(block_prefix):
            per_block[int(name[len(block_prefix):].split(".", 1)[0])].append(name)
        elif any(per_block):
            after.append(name)
        else:
            before.append(name)
    layers = [tuple(group) for group in (before, *per_block, after) if group]
    return ParameterLayout(layers=tuple(layers), head=tuple(head))
