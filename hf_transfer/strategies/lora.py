"""LoRA: low-rank adapters on the backbone's projections, merged into the weights when the run is saved.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv:2106.09685). A frozen weight
``W`` (``out x in``) is used as ``W + (alpha / r) B A`` with ``A`` (``r x in``, random) and ``B`` (``out x r``,
zero at the start, so training starts from the pretrained model) the only backbone parameters that train. The
layers come from ``peft`` (``LoraModel`` injected in place: the model keeps its class, so the Trainer, the
methods and the checkpoints see a normal ``transformers`` model with extra ``lora_A``/``lora_B`` parameters).

**Which layers** (discovered from the model, for any architecture, never from a table of names): every module of
the *backbone* (``models.layout.discover_layout``; never the new classification head) that is

- an ``nn.Linear`` (or transformers' ``Conv1D``, GPT-2 style): the attention projections (``query``/``key``/
  ``value``/``qkv``, output ``dense``/``proj``) and the MLP (``intermediate``/``output``, ``fc1``/``fc2``) of
  transformer encoders, text (BERT, RoBERTa, MiniLM, ...) and vision (timm ViT, DeiT, Swin; ConvNeXt's MLP);
- an ``nn.Conv2d`` with a 1x1 kernel and no groups: the pointwise convolutions that hold most weights of
  MobileNet/EfficientNet blocks (expansion ``conv_pw``, projection ``conv_pwl``, squeeze-excitation, ``conv_head``)
  and ConvNeXt's MLP when it is written as convolutions. A pointwise convolution is a linear map applied at every
  position, so LoRA applies unchanged. Spatial (3x3, patchify stems) and depthwise convolutions stay frozen
  (a ResNet-18/34, made of 3x3 basic blocks, thus gets adapters only on its 1x1 shortcuts: name 3x3 layers in
  ``target_modules``, e.g. ``[conv1, conv2]``, to adapt them too; ResNet-50 and up are mostly pointwise);
- and whose smaller dimension is larger than ``r``: a rank-``r`` update of a layer with ``min(in, out) <= r``
  is no smaller than the layer itself (e.g. a squeeze-excitation reduction to 8 channels at ``r: 8``).

``target_modules`` (a list of module-name suffixes, e.g. ``[query, value]`` or ``[attn.qkv]``) replaces the
discovery; a suffix ``s`` matches the modules named ``s`` or ending in ``.s``.

**What else trains**: the new classification head, fully (BERT's pooler included, as for every strategy);
biases, normalisation layers and embeddings of the backbone stay frozen. BatchNorm layers keep updating their
statistics as in full fine-tuning, since the adapted layers change the features they normalise. The feature
cache is never used (the backbone changes).

**What is saved**: the run folder holds the *merged* model (``merge_and_unload``: ``W + (alpha / r) B A`` written
into each adapted layer, original module names), so ``pipeline``, ``AutoModelFor...`` and ``timm`` load it like
any other run; the test metrics are measured before merging, on the same function. With ``save_adapter: true``
the run also writes ``adapter/`` (``adapter_config.json`` + ``adapter_model.safetensors``): the LoRA weights and
the trained head (``modules_to_save``), which ``peft.PeftModel.from_pretrained(base_model, "<run>/adapter")``
puts onto the pretrained model loaded with the run's labels. A head peft cannot save as ``modules_to_save``
(parameters held directly by a ``ParameterList``, like the fused image-text model's learned "absent" inputs) makes
``save_adapter`` a one-line error before training. Checkpoints hold the unmerged model (base weights and
LoRA weights), so an interrupted run resumes with its adapters.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, LoraModel, get_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import RecipeError
from ..models.layout import discover_layout
from . import register_strategy
from .base import Strategy
from .freezing import set_trainable

ADAPTER_NAME = "default"
"""peft's adapter name inside the model (``...query.lora_A.default.weight``)."""
ADAPTER_DIR = "adapter"
"""The run folder entry written with ``save_adapter: true``."""
#: Module types peft's LoRA can adapt, for explicit ``target_modules``.
SUPPORTED = (nn.Linear, Conv1D, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.MultiheadAttention)


@dataclass
class LoraOptions:
    r: int = 8
    """Rank of the update ``B A``."""
    alpha: float = 16.0
    """Scale: the update is multiplied by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the adapters' input (the LoRA paper uses 0.1 for some tasks)."""
    target_modules: list[str] | None = None
    """Module-name suffixes to adapt (e.g. ``[query, value]``), replacing the discovery."""
    save_adapter: bool = False
    """Also write ``adapter/`` (peft's format: LoRA weights and the trained head) next to the merged model."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise RecipeError(f"'strategy.r' must be an integer >= 1; got {self.r}.")
        if not self.alpha > 0:
            raise RecipeError(f"'strategy.alpha' must be > 0; got {self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise RecipeError(f"'strategy.dropout' must be in [0, 1); got {self.dropout}.")
        if self.target_modules is not None:
            names = [str(name).strip().strip(".") for name in self.target_modules]
            if not names or not all(names):
                raise RecipeError("'strategy.target_modules' must list module-name suffixes, e.g. [query, value]; "
                                  f"got {self.target_modules!r}.")
            self.target_modules = names


def is_pointwise_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1


def dimensions(module: nn.Module) -> tuple[int, int]:
    """(input, output) features of a Linear, Conv1D or convolution."""
    if isinstance(module, Conv1D):
        rows, columns = module.weight.shape  # Conv1D stores (in, out)
        return rows, columns
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def short_name(name: str) -> str:
    """A module name within its block: what follows the last numeric index (``blocks.3.0.conv_pw`` -> ``conv_pw``,
    ``bert.encoder.layer.1.attention.self.query`` -> ``attention.self.query``); the name itself without one."""
    parts = name.split(".")
    last = max((i for i, part in enumerate(parts) if part.isdigit()), default=-1)
    return ".".join(parts[last + 1:]) or name


def backbone_modules(model: nn.Module, layout) -> dict[str, nn.Module]:
    """Modules whose own parameters all belong to the backbone, by name (the head's never). The ``out_proj`` of an
    ``nn.MultiheadAttention`` is left out: its weight is read directly, so an adapter on it would do nothing."""
    backbone = set(layout.backbone())
    attention = {name for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)}
    found = {}
    for name, module in model.named_modules():
        if name.rpartition(".")[0] in attention and name not in attention:
            continue
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own and all(p in backbone for p in own):
            found[name] = module
    return found


def discover_targets(model: nn.Module, layout, rank: int) -> list[str]:
    """Names of the backbone's Linear / Conv1D / pointwise-Conv2d modules wider than ``rank`` (module docstring)."""
    return [name for name, module in backbone_modules(model, layout).items()
            if (isinstance(module, (nn.Linear, Conv1D)) or is_pointwise_conv(module))
            and min(dimensions(module)) > rank]


def linear_names(model: nn.Module, layout, limit: int = 8) -> str:
    """A few distinct short names of the backbone's Linear / pointwise-conv modules, for messages."""
    names = sorted({short_name(name) for name, module in backbone_modules(model, layout).items()
                    if isinstance(module, (nn.Linear, Conv1D)) or is_pointwise_conv(module)})
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "none"


def matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


@register_strategy("lora")
class LoRA(Strategy):
    """Low-rank adapters (Hu et al. 2021) on the backbone's projections plus a fully trained head; saved merged.

    See the module docstring for which layers are adapted and what the run folder holds.
    """

    Options = LoraOptions

    def __init__(self, options: LoraOptions, layout, part_rates=None) -> None:
        super().__init__(options, layout, part_rates)
        self.tuner: LoraModel | None = None
        self.targets: list[str] = []
        self._adapter: tuple[LoraConfig, dict[str, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ training
    def target_names(self, model: nn.Module) -> list[str]:
        """Full names of the modules that get adapters; a one-line RecipeError when there are none."""
        if self.options.target_modules is None:
            targets = discover_targets(model, self.layout, self.options.r)
            if not targets:
                raise RecipeError(
                    f"'strategy: lora' found no Linear or 1x1-Conv2d layer wider than r={self.options.r} in the "
                    f"backbone of {type(model).__name__} (its Linear/1x1-conv modules: "
                    f"{linear_names(model, self.layout)}); lower 'strategy.r' or list modules in "
                    "'strategy.target_modules'.")
            return targets
        candidates = backbone_modules(model, self.layout)
        targets, unsupported = [], []
        for suffix in self.options.target_modules:
            found = [name for name in candidates if matches(name, suffix)]
            if not found:
                raise RecipeError(
                    f"'strategy.target_modules' entry '{suffix}' matches no module of the backbone of "
                    f"{type(model).__name__}; its Linear/1x1-conv modules are named: "
                    f"{linear_names(model, self.layout)} (e.g. {self._example(model)}).")
            unsupported += [f"{name} ({type(candidates[name]).__name__})" for name in found
                            if not isinstance(candidates[name], SUPPORTED)]
            targets += found
        if unsupported:
            raise RecipeError(f"'strategy.target_modules' selects modules LoRA cannot adapt: "
                              f"{', '.join(unsupported[:4])}; choose Linear or convolution layers, e.g. "
                              f"{linear_names(model, self.layout, limit=4)}.")
        chosen = set(targets)
        return [name for name in candidates if name in chosen]  # in model order, once each

    def _example(self, model: nn.Module) -> str:
        for name, module in backbone_modules(model, self.layout).items():
            if isinstance(module, (nn.Linear, Conv1D)) or is_pointwise_conv(module):
                return name
        return "none"

    def prepare(self, model: nn.Module) -> None:
        self.targets = self.target_names(model)
        config = LoraConfig(r=self.options.r, lora_alpha=self.options.alpha, lora_dropout=self.options.dropout,
                            target_modules=list(self.targets), bias="none")
        set_trainable(model, (name for name, _ in model.named_parameters()), False)
        # In place: the model keeps its class and module names; each target becomes a LoRA layer around it.
        self.tuner = LoraModel(model, config, adapter_name=ADAPTER_NAME)
        # The LoRA parameters join the layers (and parts) of the modules they adapt: per-part learning rates
        # (strategy.learning_rates.backbone) reach them.
        self.layout = discover_layout(model)
        set_trainable(model, self.layout.head, True)
        if self.options.save_adapter:
            self.head_modules(model)  # before training: a head peft cannot save stops the run now

    def head_modules(self, model: nn.Module) -> list[str]:
        """The modules holding the head's parameters: the adapter's ``modules_to_save``."""
        names = sorted({name.rpartition(".")[0] for name in self.layout.head})
        unsavable = [name or type(model).__name__ for name in names
                     if not name or isinstance(model.get_submodule(name), (nn.ParameterList, nn.ParameterDict))]
        if unsavable:
            raise RecipeError(f"'strategy.save_adapter': peft cannot save the head of {type(model).__name__} as an "
                              f"adapter (parameters held directly by {', '.join(unsavable[:3])}); the merged model is "
                              "saved either way: set save_adapter: false.")
        return names

    # ------------------------------------------------------------------ saving
    def export_model(self, model: nn.Module) -> nn.Module:
        """Merge the adapters into the weights and drop them: the model has its original modules again."""
        if self.tuner is None:
            return model
        if self.options.save_adapter:
            self._adapter = self._adapter_files(model)
        merged = self.tuner.merge_and_unload(safe_merge=True)
        self.tuner = None
        return merged

    def _adapter_files(self, model: nn.Module) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
        """peft's saved-adapter format: ``base_model.model.<module>.lora_A.weight`` and the head's own names."""
        config = copy.deepcopy(self.tuner.peft_config[ADAPTER_NAME])
        config.modules_to_save = self.head_modules(model) or None
        config.inference_mode = True
        config.base_model_name_or_path = getattr(getattr(model, "config", None), "name_or_path", None) or None
        weights = dict(get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME))
        parameters = dict(model.named_parameters())
        weights.update({name: parameters[name] for name in self.layout.head})
        return config, {f"base_model.model.{key}": value.detach().to("cpu").contiguous().clone()
                        for key, value in weights.items()}

    def output_entries(self) -> tuple[str, ...]:
        return (ADAPTER_DIR,) if self.options.save_adapter else ()

    def write_outputs(self, folder: Path) -> None:
        """``<folder>/adapter``, written to a temporary sibling first and renamed into place."""
        if self._adapter is None:
            return
        config, weights = self._adapter
        target = Path(folder) / ADAPTER_DIR
        temporary = Path(tempfile.mkdtemp(dir=folder, prefix=f".{ADAPTER_DIR}."))
        try:
            config.save_pretrained(str(temporary))
            save_file(weights, str(temporary / "adapter_model.safetensors"), metadata={"format": "pt"})
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(temporary, target)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

