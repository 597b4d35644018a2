"""``evaluation.compare_modalities``: each input alone, next to the model that fuses them.

The task adapter says what "alone" means (``TaskAdapter.ablations``: for image + text, the same recipe with one
tower removed: same towers, fusion head, budget and strategy). Each ablation trains in
``<output.dir>/modalities/<name>``, then the run itself, which reports the table and the fusion gain: how much
the fused model beats the best single input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..recipe import Recipe
from ..tasks.base import get_task
from ..training.run import ExtraMetrics, FinetuneResult, preflight_run
from .reuse import SUB_RUN, claimed_for, comparison, finished_metrics, run_or_reuse
from .scratch import run_compared

logger = logging.getLogger(__name__)

MODALITIES = "modalities"
COMPARED = ("accuracy", "f1_macro")


def ablation_recipes(recipe: Recipe, root: Path) -> dict[str, Recipe]:
    """The adapter's ablations as sub-runs of ``root``: nothing pushed, no comparison of their own."""
    return {name: ablation.replace({**SUB_RUN, "evaluation.compare_modalities": False,
                                    "output.dir": str(root / MODALITIES / name)})
            for name, ablation in get_task(recipe.task).ablations(recipe).items()}


def modality_table(metrics: dict[str, Any], alone: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and macro-F1 of each input alone and fused, on the test split (else validation), and the gain of
    the fused model over the best single input."""
    split = "test" if "test" in metrics and all("test" in m for m in alone.values()) else "validation"
    rows = {name: {key: m[split][key] for key in COMPARED} for name, m in alone.items()}
    rows["fused"] = {key: metrics[split][key] for key in COMPARED}
    gain = {key: round(rows["fused"][key] - max(rows[name][key] for name in alone), 6) for key in COMPARED}
    return {"split": split, "runs": rows, "fusion_gain": gain}


def run_modalities(recipe: Recipe, write_card: bool = True,
                   extra_metrics: ExtraMetrics | None = None) -> FinetuneResult:
    """The ablations first (each reused when finished), then the fused run with the comparison in its metrics."""
    folder, _ = preflight_run(recipe)
    ablations = ablation_recipes(recipe, folder.path)
    with claimed_for(folder, recipe, MODALITIES):
        for ablation in ablations.values():  # inside the claimed run: an overwritten one has been set aside
            if finished_metrics(ablation.output.dir) is None:  # a finished one (a resumed comparison) is reused
                preflight_run(ablation)
        alone = {}
        for name, ablation in ablations.items():
            logger.info("Training %s (evaluation.compare_modalities)", name)
            alone[name] = run_or_reuse(ablation)

        compared = comparison(lambda metrics: {"compare_modalities": modality_table(metrics, alone)}, extra_metrics)
        return run_compared(recipe, write_card, extra_metrics=compared)
