"""L2-SP: keep fine-tuned weights close to the pretrained starting point."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import RecipeError
from ..models.layout import discover_layout
from . import register_method
from .base import Method, classifier_layer, unwrap

logger = logging.getLogger(__name__)


@dataclass
class L2SPOptions:
    alpha: float = 0.1
    """Strength of the pull of transferred weights toward their pretrained values."""
    beta: float = 0.01
    """Plain L2 strength on the new classification layer."""

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise RecipeError(f"'method.{name}' must be >= 0; got {getattr(self, name)}.")


@register_method("l2sp")
class L2SP(Method):
    """``alpha/2 ||w - w_source||^2`` over transferred weights plus ``beta/2 ||w_new||^2`` over the new layer.

    Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks",
    ICML 2018: weight decay toward zero forgets what pretraining learnt; decaying toward the source
    weights keeps it, which helps most when the target set is small. The final classification layer is new;
    every other parameter (BERT's pretrained pooler included) is transferred. The source copy is taken once,
    frozen, on the model's device.
    """

    Options = L2SPOptions

    def __init__(self, options: L2SPOptions) -> None:
        super().__init__(options)
        self.transferred: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.new: list[nn.Parameter] = []

    def setup(self, recipe, data, trainer) -> None:
        self.attach(trainer.model)
        if trainer.args.weight_decay > 0:
            logger.warning("l2sp with training.weight_decay=%g also decays every weight toward zero; "
                           "L2-SP usually replaces it (training.weight_decay: 0).", trainer.args.weight_decay)

    def attach(self, model: nn.Module) -> None:
        """Copy the current (pretrained) weights as the source point."""
        model = unwrap(model)
        layout = discover_layout(model)
        new_layer = classifier_layer(model, layout)
        new_ids = {id(p) for p in new_layer.parameters()}
        parameters = dict(model.named_parameters())
        self.new = [p for p in new_layer.parameters()]
        self.transferred = [(parameters[name], parameters[name].detach().clone())
                            for name in (*layout.backbone(), *layout.head) if id(parameters[name]) not in new_ids]

    def penalty(self) -> torch.Tensor:
        zero = self.new[0].new_zeros((), dtype=torch.float32)
        source = sum((((p - p0.to(p.device)) ** 2).sum().float() for p, p0 in self.transferred if p.requires_grad), zero)
        head = sum(((p ** 2).sum().float() for p in self.new if p.requires_grad), zero)
        return self.options.alpha / 2 * source + self.options.beta / 2 * head

    def loss_terms(self, model: nn.Module, inputs: dict[str, Any], outputs: Any,
                   ce: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": ce, "l2sp": self.penalty()}
