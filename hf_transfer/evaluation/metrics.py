"""Classification metrics: headline numbers for checkpoint selection, full report for the card.

Computed with scikit-learn: ``evaluate.load(...)`` fetches metric scripts from the Hub at run
time, which fails offline, and the numbers are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

HEADLINE = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
            "f1_weighted")


def headline_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict[str, float]:
    classes = list(range(num_labels))
    result = {"accuracy": float(accuracy_score(labels, predictions))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predictions, labels=classes, average=average, zero_division=0)
        result |= {f"precision_{average}": float(precision), f"recall_{average}": float(recall),
                   f"f1_{average}": float(f1)}
    return result


def classification_report(labels: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Headline metrics, per-class precision/recall/F1/support and the confusion matrix."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, average=None, zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(label_names)}
    return {**headline_metrics(labels, predictions, len(label_names)), "num_samples": int(len(labels)),
            "per_class": per_class,
            "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist()}


def metrics_for_trainer(num_labels: int):
    """``compute_metrics`` for ``Trainer``: headline metrics from logits."""

    def compute(eval_prediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return headline_metrics(eval_prediction.label_ids, np.argmax(logits, axis=-1), num_labels)

    return compute
