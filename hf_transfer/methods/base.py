"""The method interface: extra loss terms, callbacks and metrics on top of plain cross-entropy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from transformers import TrainerCallback

from ..models.layout import ParameterLayout

if TYPE_CHECKING:
    from ..data.prepare import PreparedData
    from ..recipe import Recipe
    from ..tasks.base import TaskAdapter
    from ..training.trainer import TransferTrainer


class Method:
    """One transfer method. ``TransferTrainer.compute_loss`` calls :meth:`loss_terms` on every training batch.

    The terms it returns are added up to the training loss and logged one by one (``loss_ce``,
    ``loss_l2sp``, ...). Evaluation losses stay plain cross-entropy, so runs with and without a method
    compare directly.
    """

    name: ClassVar[str]
    Options: ClassVar[type]
    #: False when the extra terms need the un-mixed inputs (teacher logits, domain features).
    supports_mixup: ClassVar[bool] = True

    def __init__(self, options: Any) -> None:
        self.options = options

    def preflight(self, recipe: "Recipe", task: "TaskAdapter", label_names: list[str] | None = None) -> dict[str, Any]:
        """Check what :meth:`setup` will load (a teacher, target data) before anything trains or is written.

        A mistake in the ``method`` section then stops ``hf-transfer check`` and the run's pre-flight with one
        error naming the field. ``label_names`` are the run's labels once its data is prepared; checks against
        them are skipped without. Returns a summary for ``hf-transfer check``.
        """
        return {}

    def setup(self, recipe: "Recipe", data: "PreparedData", trainer: "TransferTrainer") -> None:
        """Called once the trainer exists (the model is on its device), before training."""

    def loss_terms(self, model: nn.Module, inputs: dict[str, Any], outputs: Any,
                   ce: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named, already weighted terms whose sum is the training loss; ``ce`` is the usual loss."""
        return {"ce": ce}

    def parameter_groups(self, learning_rate: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups for parameters outside the model (e.g. a domain classifier)."""
        return []

    def callbacks(self) -> list[TrainerCallback]:
        return []

    def extra_metrics(self, trainer: "TransferTrainer", label_names: list[str]) -> dict[str, Any]:
        """Metrics beyond the recipe's own splits, merged into ``metrics.json``."""
        return {}

    def write_outputs(self, folder: Path) -> None:
        """Files the saved model needs beside it, written into the run's staging ``folder`` on the main process
        (after :meth:`extra_metrics`). The default writes nothing."""


def classifier_layer(model: nn.Module, layout: ParameterLayout) -> nn.Linear:
    """The final classification layer: the last ``Linear`` of the head that outputs one score per label.

    Its input is the pooled feature vector for every supported backbone (timm's pooled features,
    BERT's pooler output, RoBERTa's ``classifier.dense`` output).
    """
    num_labels = model.config.num_labels
    head = set(layout.head)
    found = [module for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == num_labels and f"{name}.weight" in head]
    if not found:
        raise ValueError(f"{type(model).__name__}: no Linear layer with {num_labels} outputs in the head "
                         f"({', '.join(sorted(head)[:6])}...).")
    return found[-1]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (parameter names without ``module.``)."""
    return getattr(model, "module", model)
