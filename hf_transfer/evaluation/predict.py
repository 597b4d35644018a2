"""Prediction: the full classification report of a split, and a ``Trainer`` that only predicts.

``hf-transfer evaluate``, the forgetting report of stages and DANN's target metrics all predict with a model
they did not train here; none of them needs a strategy, a method or a loss guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from .extra import ExtraMetricSet
from .metrics import classification_report


def evaluation_arguments(output_dir: Path | str, batch_size: int) -> TrainingArguments:
    """``TrainingArguments`` for a prediction-only ``Trainer``: no trackers, no workers, pinned memory only on a GPU."""
    return TrainingArguments(output_dir=str(output_dir), per_device_eval_batch_size=batch_size, report_to="none",
                             remove_unused_columns=False, dataloader_num_workers=0,
                             dataloader_pin_memory=torch.cuda.is_available())


def predictor(model: nn.Module, processor: Any, collator: Callable, batch_size: int, output_dir: str | Path) -> Trainer:
    """A plain ``Trainer`` for ``predict`` only; ``output_dir`` is never written (pass a temporary folder)."""
    return Trainer(model=model, args=evaluation_arguments(str(output_dir), batch_size), data_collator=collator,
                   processing_class=processor)


def evaluate_split(trainer: Trainer, dataset, label_names: list[str], prefix: str,
                   extra: ExtraMetricSet = ExtraMetricSet(), groups: Sequence[int] | None = None) -> dict[str, Any]:
    """Predict a whole split and return the full classification report (with the loss and ``extra`` metrics).

    ``groups``: when rows are parts of examples (``ModelInputs.groups``), the example of each row; the report is
    then about examples, each predicted from the mean of its rows' logits (the loss stays the rows' mean).
    """
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    labels = output.label_ids
    if groups is not None:
        logits, labels = pool_rows(logits, labels, groups)
    predictions = np.argmax(logits, axis=-1)
    report = classification_report(labels, predictions, label_names)
    if groups is not None:
        report["rows"] = len(groups)
    if f"{prefix}_loss" in output.metrics:
        report["loss"] = float(output.metrics[f"{prefix}_loss"])
    return extra.add_to(report, labels, predictions)


def pool_rows(logits: np.ndarray, labels: np.ndarray, groups: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One row per example, in example order: the mean of its rows' logits and its (first row's) label."""
    groups = np.asarray(groups)
    if len(groups) != len(logits):
        raise ValueError(f"{len(groups)} row groups for {len(logits)} predicted rows")
    examples, first, index = np.unique(groups, return_index=True, return_inverse=True)
    sums = np.zeros((len(examples), logits.shape[-1]), dtype=np.float64)
    np.add.at(sums, index, logits)
    return sums / np.bincount(index)[:, None], np.asarray(labels)[first]
