"""PNG figures people would rather look at than JSON: confusion matrix and learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

#: Above this many classes, tick labels and cell counts are unreadable and are left out.
MAX_LABELLED_CLASSES = 30


def new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    """A figure outside pyplot: no global backend switch (a notebook keeps its own) and nothing to close."""
    return Figure(figsize=(width, height), layout=layout)


def save_confusion_matrix(matrix: Sequence[Sequence[int]], label_names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (colour = recall per true class), raw counts in the cells."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = len(label_names)
    side = min(20.0, max(4.0, 0.45 * size + 2))
    longest = max((len(str(name)) for name in label_names), default=0) if size <= MAX_LABELLED_CLASSES else 0
    # Room for the colour bar and the y tick labels beside the square matrix, and never narrower than the title:
    # with few classes the matrix alone is narrower than "Confusion matrix / N examples, accuracy X%".
    width = min(24.0, max(5.5, side + 1.5 + 0.07 * min(longest, 40)))
    # Constrained layout places the title, tick labels and colour bar inside the figure (tight_layout can cut a
    # title that is wider than a small matrix).
    figure = new_figure(width, side + 0.6, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if size <= MAX_LABELLED_CLASSES:
        axes.set_xticks(range(size), labels=label_names, rotation=90 if size > 6 else 0)
        axes.set_yticks(range(size), labels=label_names)
        for i in range(size):
            for j in range(size):
                if counts[i, j]:
                    axes.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                              color="white" if normalised[i, j] > 0.5 else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else 0.0
    figure.suptitle(f"Confusion matrix\n{int(total)} examples, accuracy {accuracy:.1%}")
    figure.savefig(path, dpi=100)
    return path


def save_learning_curves(log_history: list[dict[str, Any]], path: Path) -> Path | None:
    """Training and validation loss, and validation accuracy, against the step; None if nothing was logged."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evaluation = [entry for entry in log_history if "eval_loss" in entry and "step" in entry]
    if not train and not evaluation:
        return None
    figure = new_figure(10, 4)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    if train:
        loss_axes.plot(*zip(*train), label="train loss", alpha=0.8)
    if evaluation:
        loss_axes.plot([e["step"] for e in evaluation], [e["eval_loss"] for e in evaluation], "o-",
                       label="validation loss")
        with_accuracy = [e for e in evaluation if "eval_accuracy" in e]
        accuracy_axes.plot([e["step"] for e in with_accuracy], [e["eval_accuracy"] for e in with_accuracy], "o-",
                           color="tab:green")
    loss_axes.set(xlabel="step", ylabel="loss", title="Loss")
    loss_axes.legend()
    accuracy_axes.set(xlabel="step", ylabel="accuracy", title="Validation accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
