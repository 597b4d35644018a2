"""Discriminative (layer-wise) learning rates decaying from the head toward the input."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RecipeError
from . import register_strategy
from .base import Strategy


@dataclass
class LayerwiseLROptions:
    layer_decay: float = 0.75
    """Each layer's learning rate is this factor times the one of the layer above it."""
    head_lr: float | None = None
    """Learning rate of the head; defaults to ``training.learning_rate``."""

    def __post_init__(self) -> None:
        if not 0 < self.layer_decay <= 1:
            raise RecipeError(f"'strategy.layer_decay' must be in (0, 1]; got {self.layer_decay}.")
        if self.head_lr is not None and self.head_lr <= 0:
            raise RecipeError(f"'strategy.head_lr' must be > 0; got {self.head_lr}.")


@register_strategy("layerwise_lr")
class LayerwiseLR(Strategy):
    """Lower layers hold generic features and need smaller updates (ULMFiT's discriminative
    fine-tuning; BEiT/timm ``--layer-decay``): layer ``i`` of ``L`` gets ``lr * decay**(L - i)``."""

    Options = LayerwiseLROptions

    def learning_rates(self, base_lr: float) -> dict[str, float]:
        depth = self.layout.num_layers
        rates = {name: self.options.head_lr or base_lr for name in self.layout.head}
        for index, layer in enumerate(self.layout.layers):
            for name in layer:
                rates[name] = base_lr * self.options.layer_decay ** (depth - index)
        return rates
