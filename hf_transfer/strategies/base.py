"""The strategy interface: how the pretrained weights take part in training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn
from transformers import TrainerCallback

from ..config_utils import closest
from ..errors import RecipeError
from ..models.layout import ParameterLayout
from .freezing import FrozenModulesInEval, set_trainable


@dataclass
class NoOptions:
    """This strategy takes no options."""


class Strategy:
    """Prepares the model (freezing), builds optimizer parameter groups and adds callbacks.

    Subclasses override only what they change; the defaults train every parameter with one
    learning rate, which is plain fine-tuning.
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    #: True when the backbone never trains, so its features could be computed once.
    freezes_backbone: ClassVar[bool] = False

    def __init__(self, options: Any, layout: ParameterLayout, part_rates: dict[str, float] | None = None) -> None:
        self.options = options
        self.layout = layout
        self.frozen_in_eval: FrozenModulesInEval | None = None
        self.part_rates = dict(part_rates or {})
        """``strategy.learning_rates``: a learning rate per layout part (``head``, ``backbone``, towers)."""
        unknown = [part for part in self.part_rates if part not in layout.parts]
        if unknown:
            hint = closest(unknown[0], layout.parts)
            raise RecipeError(f"'strategy.learning_rates.{unknown[0]}' is not a part of this model"
                              + (f"; did you mean '{hint}'?" if hint else ".") + f" Parts: {', '.join(layout.parts)}.")

    def prepare(self, model: nn.Module) -> None:
        """Called once before training; the default makes everything trainable."""
        set_trainable(model, (name for name, _ in model.named_parameters()), True)

    def learning_rates(self, base_lr: float) -> dict[str, float]:
        """Learning rate per parameter name; the default gives every parameter ``base_lr``."""
        return {name: base_lr for name in (*self.layout.backbone(), *self.layout.head)}

    def rates(self, base_lr: float) -> dict[str, float]:
        """``learning_rates``, with ``strategy.learning_rates`` replacing ``base_lr`` part by part (the strategy's
        own factors, e.g. layer-wise decay, still apply within a part)."""
        rates = self.learning_rates(base_lr)
        for part, rate in self.part_rates.items():
            for name in self.layout.parts[part]:
                rates[name] = rate * rates.get(name, base_lr) / base_lr
        return rates

    def callbacks(self) -> list[TrainerCallback]:
        return []

    def export_model(self, model: nn.Module) -> nn.Module:
        """The model to save, from the trained one; called once after training and evaluation (the metrics are
        measured on the model as trained), before the run folder is written. The default saves it as it is;
        ``lora`` merges its adapters into the weights."""
        return model

    def output_entries(self) -> tuple[str, ...]:
        """Top-level entries ``write_outputs`` adds to the run folder (its ownership marker lists them first)."""
        return ()

    def write_outputs(self, folder: Path) -> None:
        """Write ``output_entries`` into the run folder ``folder``, after ``export_model``, on the main process
        only; called before the run's model folder and ``metrics.json`` are written. The default writes nothing."""

    def keep_frozen_modules_in_eval(self, model: nn.Module) -> None:
        """BatchNorm statistics and dropout of frozen parts must not change while the head trains."""
        if self.frozen_in_eval is None:
            self.frozen_in_eval = FrozenModulesInEval(model)
        self.frozen_in_eval.refresh()
