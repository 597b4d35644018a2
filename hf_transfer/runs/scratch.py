"""``evaluation.compare_to_scratch``: the same recipe from random initialisation, next to the transferred run.

The difference is what the pretrained weights bring (``transfer_gain``). The baseline trains first, in
``<output.dir>/scratch``, then the run itself, which reports the comparison; both seed themselves at start,
so their numbers do not depend on the order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.prepare import PreparedData
from ..recipe import Recipe
from ..training.run import ExtraMetrics, FinetuneResult, preflight_run, run_single
from .reuse import claimed_for, comparison, finished_metrics

logger = logging.getLogger(__name__)

SCRATCH = "scratch"
#: Sections of the baseline's metrics copied into the run's own ``metrics.json``.
COMPARED = ("validation", "test", "train")


def scratch_recipe(recipe: Recipe, root: Path) -> Recipe:
    """The baseline in ``root/scratch``: no pretrained weights, nothing pushed; ``evaluation.scratch_overrides`` last."""
    return recipe.replace({"model.pretrained": False, "output.dir": str(root / SCRATCH),
                           "output.push_to_hub": False, "output.overwrite": False,
                           "evaluation.compare_to_scratch": False, "evaluation.cross_validate": None,
                           "evaluation.learning_curve": None, **recipe.evaluation.scratch_overrides})


def transfer_gain(metrics: dict[str, Any], scratch: dict[str, Any]) -> dict[str, float]:
    split = "test" if "test" in metrics and "test" in scratch else "validation"
    return {key: round(metrics[split][key] - scratch[split][key], 6) for key in ("accuracy", "f1_macro")}


def train_scratch(recipe: Recipe, root: Path) -> dict[str, Any]:
    """Metrics of the baseline, trained now unless its folder holds a finished one."""
    baseline = scratch_recipe(recipe, root)
    metrics = finished_metrics(baseline.output.dir)
    if metrics is not None:
        return metrics
    logger.info("Training the from-scratch baseline (evaluation.compare_to_scratch)")
    return run_single(baseline, write_card=False).metrics


def run_compared(recipe: Recipe, write_card: bool = True, extra_metrics: ExtraMetrics | None = None,
                 data: PreparedData | None = None) -> FinetuneResult:
    """``run_single``, preceded by the from-scratch baseline when ``evaluation.compare_to_scratch`` asks for it."""
    if not recipe.evaluation.compare_to_scratch:
        return run_single(recipe, write_card, extra_metrics=extra_metrics, data=data)
    folder, _ = preflight_run(recipe)  # a bad output folder or push target fails before the baseline trains
    with claimed_for(folder, recipe, SCRATCH):
        scratch = train_scratch(recipe, folder.path)
        compared = comparison(lambda metrics: {"scratch": {key: scratch[key] for key in COMPARED if key in scratch},
                                               "transfer_gain": transfer_gain(metrics, scratch)}, extra_metrics)
        return run_single(recipe, write_card, extra_metrics=compared, data=data)
