"""Partial fine-tuning: the first layers stay frozen, the rest and the head train."""

from dataclasses import dataclass

from torch import nn

from ..errors import RecipeError
from . import register_strategy
from .base import Strategy
from .freezing import set_trainable


@dataclass
class PartialOptions:
    frozen_layers: int = 1
    """Number of backbone layers, counted from the input (stem/embeddings = 1), that stay frozen."""

    def __post_init__(self) -> None:
        if self.frozen_layers < 0:
            raise RecipeError(f"'strategy.frozen_layers' must be >= 0; got {self.frozen_layers}.")


@register_strategy("partial")
class PartialFineTuning(Strategy):
    """Freeze the lowest layers, whose generic features transfer best (Yosinski et al., NeurIPS 2014)."""

    Options = PartialOptions

    def prepare(self, model: nn.Module) -> None:
        if self.options.frozen_layers > self.layout.num_layers:
            raise RecipeError(f"'strategy.frozen_layers' = {self.options.frozen_layers} but the backbone has only "
                              f"{self.layout.num_layers} layers; use linear_probe to freeze all of them.")
        super().prepare(model)
        frozen = [name for layer in self.layout.layers[: self.options.frozen_layers] for name in layer]
        set_trainable(model, frozen, False)
        self.keep_frozen_modules_in_eval(model)
