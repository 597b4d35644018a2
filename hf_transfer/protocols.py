"""Runs made of several runs: stages, k-fold cross-validation and learning curves.

Each writes its sub-runs inside the run's ``output.dir`` first (``stages/``, ``folds/``,
``learning_curve/``), skipping finished ones, so a stopped run resumes where it was; the run's model
folder is trained last and gets the summary in ``metrics.json`` and the card.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .data.prepare import PreparedData
from .recipe import Recipe
from .training.outputs import METRICS_FILE, RunFolder

logger = logging.getLogger(__name__)

#: Sub-runs never repeat the protocol, push, or train their own scratch baseline.
SUB_RUN = {"evaluation.cross_validate": None, "evaluation.learning_curve": None,
           "evaluation.compare_to_scratch": False, "output.push_to_hub": False, "output.overwrite": False}


def run_or_reuse(recipe: Recipe, data: PreparedData | None = None) -> dict[str, Any]:
    """Metrics of a sub-run: read from its folder when finished, else trained now (resuming if started)."""
    from .training.run import run_single

    if RunFolder(recipe.output.dir).is_finished():
        logger.info("Reusing the finished run in %s", recipe.output.dir)
        return json.loads((Path(recipe.output.dir) / METRICS_FILE).read_text())
    return run_single(recipe, write_card=False, data=data).metrics


def run_protocols(recipe: Recipe, write_card: bool = True):
    """Stages, or cross-validation and/or a learning curve followed by the normal run of the recipe."""
    from .data.prepare import prepare_data
    from .tasks.base import get_task
    from .training.run import run_folder, run_single

    if recipe.stages:
        from .stages import run_stages

        return run_stages(recipe, write_card)
    folder = run_folder(recipe)
    with folder.claimed(recipe.to_yaml()):
        recipe = recipe.replace({"output.overwrite": False})
        seed = int(recipe.training.get("seed", 42))
        data = prepare_data(recipe.data, get_task(recipe.task).input_roles, seed)
        added: dict[str, Any] = {}
        if recipe.evaluation.cross_validate:
            from .evaluation.cross_validation import cross_validate

            added["cross_validation"] = cross_validate(recipe, data, folder.path)
        curve = None
        if recipe.evaluation.learning_curve:
            from .evaluation.learning_curve import run_learning_curve

            curve = run_learning_curve(recipe, data, folder.path)

        def extra(trainer, metrics: dict[str, Any]) -> dict[str, Any]:
            if curve is not None:
                from .evaluation.learning_curve import finish_learning_curve

                added["learning_curve"] = finish_learning_curve(curve, metrics, folder.path)
            return added

        return run_single(recipe, write_card, extra_metrics=extra, data=data)
