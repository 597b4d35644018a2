"""One classifier over an image backbone (timm) and a text encoder (transformers), fused late.

``ImageTextFusionForClassification`` is a plain ``PreTrainedModel``: its config holds both towers' configs, its
weights are one safetensors file, and importing ``hf_transfer`` registers it with ``AutoConfig`` and
``AutoModel``, so a saved folder loads without ``trust_remote_code``. Each tower gives one pooled vector per
example; a registered fusion (``concat``, ``gated``) combines them and a linear layer classifies. A tower whose
input is missing for an example (no photo, empty text) contributes a learned "absent" embedding instead.

transformers' ``VisionTextDualEncoderModel`` pairs the same kinds of towers for contrastive training, with no
classifier and no timm backbones; this model is the classification counterpart.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel, TimmWrapperConfig
from transformers.modeling_outputs import SequenceClassifierOutput

from ..models.layout import ParameterLayout, discover_layout
from ..registry import FUSIONS

MODEL_TYPE = "hf_transfer_image_text"
TOWERS = ("image", "text")
"""Tower names, in the order their features are joined."""


# ------------------------------------------------------------------------------------------ fusion kinds

class Fusion(nn.Module):
    """Combines per-tower vectors (already normalised, one per tower) into one ``hidden_size`` vector."""

    def __init__(self, sizes: list[int], hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.sizes = sizes
        self.hidden_size = hidden_size


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Late fusion: the towers' vectors joined, then one hidden layer (AutoGluon's fusion MLP does the same)."""

    def __init__(self, sizes: list[int], hidden_size: int, dropout: float) -> None:
        super().__init__(sizes, hidden_size, dropout)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(sizes), hidden_size), nn.GELU(), nn.Dropout(dropout))

    def forward(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat(vectors, dim=-1))


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Gated multimodal unit (Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR-W 2017):
    each tower is projected, and a gate computed from all of them weighs the towers per example and unit."""

    def __init__(self, sizes: list[int], hidden_size: int, dropout: float) -> None:
        super().__init__(sizes, hidden_size, dropout)
        self.dropout = nn.Dropout(dropout)
        self.projections = nn.ModuleList(nn.Linear(size, hidden_size) for size in sizes)
        self.gate = nn.Linear(sum(sizes), hidden_size * len(sizes))

    def forward(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        vectors = [self.dropout(v) for v in vectors]
        projected = torch.stack([torch.tanh(p(v)) for p, v in zip(self.projections, vectors)], dim=1)
        gates = self.gate(torch.cat(vectors, dim=-1)).view(-1, len(vectors), self.hidden_size).softmax(dim=1)
        return self.dropout((gates * projected).sum(dim=1))


# ------------------------------------------------------------------------------------------ config

class ImageTextConfig(PretrainedConfig):
    """Both towers' configs (either may be absent: a one-tower model is the modality ablation) and the fusion."""

    model_type = MODEL_TYPE
    has_no_defaults_at_init = True

    def __init__(self, image_config: dict | PretrainedConfig | None = None,
                 text_config: dict | PretrainedConfig | None = None, fusion: str = "concat", hidden_size: int = 256,
                 fusion_dropout: float = 0.1, modality_dropout: float = 0.0, text_pooling: str = "mean",
                 text_max_length: int = 128, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_config = _sub_config(image_config)
        self.text_config = _sub_config(text_config)
        self.fusion = fusion
        self.hidden_size = hidden_size
        self.fusion_dropout = fusion_dropout
        self.modality_dropout = modality_dropout
        self.text_pooling = text_pooling
        self.text_max_length = text_max_length
        """Tokens the text tower read in training; prediction truncates the same way."""

    @property
    def towers(self) -> tuple[str, ...]:
        return tuple(name for name in TOWERS if getattr(self, f"{name}_config") is not None)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for name in TOWERS:
            sub = getattr(self, f"{name}_config")
            output[f"{name}_config"] = sub.to_dict() if sub is not None else None
        return output


def _sub_config(config: dict | PretrainedConfig | None) -> PretrainedConfig | None:
    if config is None or isinstance(config, PretrainedConfig):
        return config
    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type == "timm_wrapper":
        return TimmWrapperConfig(**config)
    return AutoConfig.for_model(model_type, **config)


# ------------------------------------------------------------------------------------------ towers

def image_features(tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """A ``TimmWrapperModel``'s pooled pre-logits features (the vector a timm classifier reads)."""
    timm_model = tower.timm_model
    return timm_model.forward_head(timm_model.forward_features(pixel_values), pre_logits=True)


def text_features(tower: nn.Module, inputs: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    """Mean over real tokens, or the first token's last hidden state."""
    hidden = tower(**inputs).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def tower_width(tower: nn.Module, name: str) -> int:
    if name == "image":
        return int(tower.timm_model.num_features)
    return int(tower.config.hidden_size)


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ------------------------------------------------------------------------------------------ the model

class ImageTextFusionForClassification(PreTrainedModel):
    config_class = ImageTextConfig
    base_model_prefix = "fusion_model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []

    def __init__(self, config: ImageTextConfig, towers: dict[str, nn.Module] | None = None) -> None:
        super().__init__(config)
        towers = towers or {}
        for name in TOWERS:
            sub = getattr(config, f"{name}_config")
            tower = None if sub is None else towers[name] if name in towers else AutoModel.from_config(sub)
            setattr(self, f"{name}_tower", tower)
        widths = [tower_width(getattr(self, f"{name}_tower"), name) for name in config.towers]
        self.norms = nn.ModuleList(nn.LayerNorm(width) for width in widths)
        self.absent = nn.ParameterList(nn.Parameter(torch.zeros(width)) for width in widths)
        self.fusion = FUSIONS.lookup(config.fusion)(widths, config.hidden_size, config.fusion_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Only the fusion head is ours to initialise; the towers come initialised (or pretrained)."""
        if any(module is m for m in self._head_modules()) or any(
                module is m for head in self._head_modules() for m in head.modules()):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _head_modules(self) -> list[nn.Module]:
        return [m for m in (getattr(self, "norms", None), getattr(self, "absent", None),
                            getattr(self, "fusion", None), getattr(self, "classifier", None)) if m is not None]

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func: Any = None,
                                    every_n_layers: int = 1) -> None:
        """``training.gradient_checkpointing``: each tower checkpoints its own blocks, the text encoder through
        transformers and the image backbone through timm (``set_grad_checkpointing``); the small head does not."""
        text = self.text_tower
        if text is not None and text.supports_gradient_checkpointing:
            if gradient_checkpointing_func is None:
                text._set_gradient_checkpointing(enable=enable, every_n_layers=every_n_layers)
            else:
                text._set_gradient_checkpointing(enable, gradient_checkpointing_func, every_n_layers)
        timm_model = getattr(self.image_tower, "timm_model", None)
        if timm_model is not None and callable(getattr(timm_model, "set_grad_checkpointing", None)):
            timm_model.set_grad_checkpointing(enable)

    # ------------------------------------------------------------------ forward

    def feature_parts(self) -> dict[str, str]:
        """Tower -> parameter prefix: the feature cache keys each tower's features on its own weights, so a model
        with the same tower (the modality ablations, a second run) reuses them."""
        return {name: f"{name}_tower." for name in self.config.towers}

    def tower_features(self, pixel_values: torch.Tensor | None = None, image_present: torch.Tensor | None = None,
                       text_present: torch.Tensor | None = None, towers: tuple[str, ...] | None = None,
                       **text_inputs: torch.Tensor) -> torch.Tensor:
        """The frozen part for the feature cache: per tower (all, or ``towers``), its pooled vector and a presence
        flag, joined in tower order."""
        blocks = []
        for name in towers or self.config.towers:
            if name == "image":
                if pixel_values is None:
                    raise ValueError("This model has an image tower: pass pixel_values.")
                vector = image_features(self.image_tower, pixel_values)
                present = image_present
            else:
                inputs = {k: v for k, v in text_inputs.items() if k in TEXT_INPUTS and v is not None}
                if "input_ids" not in inputs:
                    raise ValueError("This model has a text tower: pass input_ids and attention_mask.")
                inputs.setdefault("attention_mask", torch.ones_like(inputs["input_ids"]))
                vector = text_features(self.text_tower, inputs, self.config.text_pooling)
                present = text_present
            flag = (torch.ones(len(vector), 1, device=vector.device) if present is None
                    else present.to(vector.device).float().view(-1, 1))
            blocks += [vector.float(), flag]
        return torch.cat(blocks, dim=-1)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The trainable head: absent towers replaced, each normalised, fused, classified."""
        widths = [norm.normalized_shape[0] for norm in self.norms]
        count = len(widths)
        blocks = features.split([width + 1 for width in widths], dim=-1)
        vectors = [block[:, :-1] for block in blocks]
        present = torch.cat([block[:, -1:] for block in blocks], dim=-1) > 0.5
        # the classifier's mode, not the model's: a head trained on cached features runs outside the model
        if self.classifier.training and self.config.modality_dropout > 0 and count > 1:
            hidden = torch.rand(present.shape, device=present.device) < self.config.modality_dropout
            kept = present & ~hidden
            # an example keeps its inputs when dropout would hide all it has (a photo without text included):
            # trained on no input at all, it would teach the head that the stand-ins mean its label
            present = torch.where(kept.any(dim=1, keepdim=True), kept, present)
        fused = []
        for i, (vector, norm, absent) in enumerate(zip(vectors, self.norms, self.absent)):
            vector = torch.where(present[:, i:i + 1], vector, absent.to(vector.dtype).expand_as(vector))
            fused.append(norm(vector.to(norm.weight.dtype)))
        return self.classifier(self.fusion(fused))

    def head_modules(self) -> list[nn.Module]:
        return [self.norms, self.absent, self.fusion, self.classifier]

    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                image_present: torch.Tensor | None = None, text_present: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        features = self.tower_features(pixel_values, image_present, text_present, input_ids=input_ids,
                                       attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = self.logits_from_features(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    # ------------------------------------------------------------------ layout for the strategies

    def parameter_layout(self) -> ParameterLayout:
        """Each tower's own layers, aligned from the top so that layer ``-k`` of both towers forms one layer:
        ``partial`` and ``gradual_unfreeze`` then freeze or free the same depth of both towers."""
        tower_layers = []
        parts: dict[str, tuple[str, ...]] = {}
        for name in self.config.towers:
            layout = discover_layout(getattr(self, f"{name}_tower"))
            prefix = f"{name}_tower."
            layers = [tuple(prefix + p for p in layer) for layer in layout.layers]
            if layout.head:  # a tower's own head (BERT's pooler) is not used: it stays in the lowest group
                layers[0] = layers[0] + tuple(prefix + p for p in layout.head)
            tower_layers.append(layers)
            parts[name] = tuple(p for layer in layers for p in layer)
        depth = max((len(layers) for layers in tower_layers), default=0)
        merged = []
        for level in range(depth):  # level 0 = the layer just below the head
            merged.append(tuple(p for layers in tower_layers if level < len(layers)
                                for p in layers[len(layers) - 1 - level]))
        head = tuple(name for name, _ in self.named_parameters()
                     if not any(name.startswith(f"{t}_tower.") for t in self.config.towers))
        parts["head"] = head
        return ParameterLayout(layers=tuple(reversed(merged)), head=head, parts=parts)


def register_auto_classes() -> None:
    """``AutoConfig``/``AutoModel`` learn the fused model, so saved folders load without remote code."""
    AutoConfig.register(MODEL_TYPE, ImageTextConfig, exist_ok=True)
    AutoModel.register(ImageTextConfig, ImageTextFusionForClassification, exist_ok=True)


register_auto_classes()
