"""``evaluation.cross_validate: k``: stratified k-fold over train + validation, mean and std of every metric.

One split into train and validation gives one number whose noise is unknown; k folds give k (Kohavi,
"A study of cross-validation and bootstrap for accuracy estimation and model selection", IJCAI 1995,
recommends stratified folds). The test split, if any, is the same for every fold.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from datasets import concatenate_datasets
from sklearn.model_selection import StratifiedKFold

from ..data.prepare import LABEL, PreparedData, column_values
from ..errors import RecipeError
from ..recipe import Recipe
from ..training.outputs import record
from .reuse import SUB_RUN, run_or_reuse

#: Sections of metrics.json whose numbers are summarised (per-class rows stay in each fold's own file).
SUMMARISED = ("validation", "test", "train")


def fold_indices(labels: Sequence[int], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """``k`` (train, held-out) index pairs: held-out parts disjoint, covering everything, class-stratified."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < k:
        raise RecipeError(f"'evaluation.cross_validate' = {k} needs at least {k} examples of every class in train + "
                          f"validation; class {int(classes[counts.argmin()])} has {int(counts.min())}. Lower k.")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    return [(train.tolist(), held.tolist()) for train, held in folds]


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Every number of the summarised sections, by dotted name (``test.accuracy``, ``train.runtime_s``)."""
    found: dict[str, float] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key != "per_class":
                    walk(value, f"{prefix}.{key}")
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
            found[prefix] = float(node)

    for section in SUMMARISED:
        walk(metrics.get(section), section)
    return found


def summarise(fold_metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1) of each metric every fold has."""
    per_fold = [scalar_metrics(m) for m in fold_metrics]
    names = [name for name in per_fold[0] if all(name in fold for fold in per_fold)]
    summary = {}
    for name in names:
        values = np.array([fold[name] for fold in per_fold])
        summary[name] = {"mean": round(float(values.mean()), 6),
                         "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 6),
                         "values": [round(float(v), 6) for v in values]}
    return summary


def cross_validate(recipe: Recipe, data: PreparedData, root: Path) -> dict[str, Any]:
    """Train one run per fold in ``root/folds/<i>`` and summarise them."""
    k = int(recipe.evaluation.cross_validate)
    seed = recipe.seed
    pool = concatenate_datasets([data.train, data.validation])
    record(root, "folds")
    folds, metrics = [], []
    for i, (train, held) in enumerate(fold_indices(column_values(pool, LABEL), k, seed)):
        fold_data = dataclasses.replace(
            data, train=pool.select(train), validation=pool.select(held),
            sources={**data.sources, "validation": f"fold {i} of a stratified {k}-fold over train + validation "
                                                   f"(seed {seed})"})
        folder = root / "folds" / str(i)
        metrics.append(run_or_reuse(recipe.replace({**SUB_RUN, "output.dir": str(folder)}), fold_data))
        folds.append({"fold": i, "folder": str(folder), "train": len(train), "validation": len(held)})
    return {"k": k, "seed": seed, "folds": folds, "metrics": summarise(metrics)}
