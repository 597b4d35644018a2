"""Gradual unfreezing: the head trains first, then backbone layers join from the top down."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from torch import nn
from transformers import TrainerCallback

from ..errors import RecipeError
from . import register_strategy
from .base import Strategy
from .freezing import set_trainable

logger = logging.getLogger(__name__)


@dataclass
class GradualUnfreezeOptions:
    head_epochs: float = 1.0
    """Epochs during which only the head trains."""
    layers_per_step: int = 0
    """Backbone layers unfrozen at each step; 0 unfreezes everything at once after the head epochs."""
    epochs_per_step: float = 1.0
    """Epochs between two unfreezing steps."""

    def __post_init__(self) -> None:
        if self.head_epochs < 0 or self.epochs_per_step <= 0 or self.layers_per_step < 0:
            raise RecipeError("'strategy' gradual_unfreeze options must be head_epochs >= 0, "
                              "epochs_per_step > 0, layers_per_step >= 0.")


@register_strategy("gradual_unfreeze")
class GradualUnfreeze(Strategy):
    """Head first, then unfreeze on a schedule (ULMFiT, Howard & Ruder, ACL 2018; fastai ``fine_tune``).

    Training a random head on a frozen backbone first keeps its large early gradients from
    wrecking the pretrained features.
    """

    Options = GradualUnfreezeOptions

    def prepare(self, model: nn.Module) -> None:
        self.unfreeze_to(model, 0)

    def trainable_layers_at(self, epoch: float) -> int:
        """How many backbone layers (from the top) train at ``epoch``."""
        options = self.options
        if epoch < options.head_epochs:
            return 0
        if options.layers_per_step == 0:
            return self.layout.num_layers
        steps = 1 + math.floor((epoch - options.head_epochs) / options.epochs_per_step + 1e-9)
        return min(self.layout.num_layers, steps * options.layers_per_step)

    def unfreeze_to(self, model: nn.Module, trainable_layers: int) -> None:
        split = self.layout.num_layers - trainable_layers
        set_trainable(model, self.layout.head, True)
        set_trainable(model, [n for layer in self.layout.layers[:split] for n in layer], False)
        set_trainable(model, [n for layer in self.layout.layers[split:] for n in layer], True)
        self.keep_frozen_modules_in_eval(model)

    def callbacks(self) -> list[TrainerCallback]:
        return [_UnfreezeCallback(self)]


class _UnfreezeCallback(TrainerCallback):
    def __init__(self, strategy: GradualUnfreeze) -> None:
        self.strategy = strategy
        self.current = -1

    def _update(self, state, model) -> None:
        wanted = self.strategy.trainable_layers_at(state.epoch or 0.0)
        if wanted != self.current and model is not None:
            self.strategy.unfreeze_to(model, wanted)
            if self.current >= 0:
                logger.info("epoch %.2f: %d of %d backbone layers now train", state.epoch or 0.0, wanted,
                            self.strategy.layout.num_layers)
            self.current = wanted

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if getattr(args, "world_size", 1) > 1:
            # DDP synchronises only the parameters that required gradients when it wrapped the model.
            raise RecipeError("'gradual_unfreeze' cannot run in several processes: parameters unfrozen later would "
                              "not be synchronised. Train on one device, or use 'layerwise_lr' or 'partial'.")
        self._update(state, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._update(state, model)
