"""``evaluation.learning_curve``: accuracy against the amount of training data, pretrained vs from scratch.

The gap between the two curves is what transfer buys at each data size; it usually shrinks as the data
grows (Kornblith et al., "Do Better ImageNet Models Transfer Better?", CVPR 2019). Each fraction is a
seeded, stratified subset of the run's train split; validation and test stay whole.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from ..data.prepare import LABEL, PreparedData, column_values
from ..data.sampling import stratified_indices
from ..recipe import Recipe
from ..evaluation.plots import new_figure
from ..training.outputs import record
from .reuse import SUB_RUN, run_or_reuse

PLOT_FILE = "learning_curve.png"
VARIANTS = ("pretrained", "scratch")


def fraction_indices(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """A stratified subset of ``fraction`` of the rows with at least one example of every class."""
    size = max(len(set(labels)), round(fraction * len(labels)))
    return stratified_indices(labels, size, seed, every_class=True)


def _fraction_name(fraction: float) -> str:
    return f"{fraction:g}"


def run_learning_curve(recipe: Recipe, data: PreparedData, root: Path) -> list[dict[str, Any]]:
    """Train each fraction pretrained and from scratch in ``root/learning_curve/<fraction>/<variant>``.

    The pretrained run at fraction 1.0 is the recipe's own run, so it is left to the caller.
    """
    seed = recipe.seed
    labels = column_values(data.train, LABEL)
    record(root, "learning_curve")
    points = []
    for fraction in recipe.evaluation.learning_curve:
        indices = fraction_indices(labels, fraction, seed)
        subset = dataclasses.replace(data, train=data.train.select(indices))
        point: dict[str, Any] = {"fraction": fraction, "train_samples": len(indices)}
        for variant in VARIANTS:
            if variant == "pretrained" and fraction == 1.0:
                continue
            overrides = {**SUB_RUN, "output.dir": str(root / "learning_curve" / _fraction_name(fraction) / variant)}
            if variant == "scratch":
                overrides.update({"model.pretrained": False, **recipe.evaluation.scratch_overrides})
            point[variant] = run_or_reuse(recipe.replace(overrides), subset)
        points.append(point)
    return points


def finish_learning_curve(points: list[dict[str, Any]], main_metrics: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The table for metrics.json (the main run fills fraction 1.0, pretrained) and the PNG in ``folder``."""
    split = "test" if "test" in main_metrics else "validation"
    rows = []
    for point in points:
        runs = {"pretrained": point.get("pretrained", main_metrics), "scratch": point["scratch"]}
        row = {"fraction": point["fraction"], "train_samples": point["train_samples"]}
        for variant, metrics in runs.items():
            row[variant] = {key: metrics[split][key] for key in ("accuracy", "f1_macro")}
        row["gain_accuracy"] = round(row["pretrained"]["accuracy"] - row["scratch"]["accuracy"], 6)
        rows.append(row)
    record(folder, PLOT_FILE)
    save_learning_curve_plot(rows, split, folder / PLOT_FILE)
    return {"split": split, "rows": rows, "plot": PLOT_FILE}


def save_learning_curve_plot(rows: list[dict[str, Any]], split: str, path: Path) -> Path:
    """Accuracy against the number of training examples (log scale), one line per variant."""
    figure = new_figure(6, 4)
    axes = figure.subplots()
    sizes = [row["train_samples"] for row in rows]
    for variant in VARIANTS:
        axes.plot(sizes, [row[variant]["accuracy"] for row in rows], "o-", label=variant)
    axes.set_xscale("log")
    axes.set(xlabel="training examples (log scale)", ylabel=f"{split} accuracy", title="Learning curve")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
