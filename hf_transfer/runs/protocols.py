"""Cross-validation and/or a learning curve, followed by the normal run of the recipe.

Sub-runs go inside the run's ``output.dir`` first (``folds/``, ``learning_curve/``), skipping finished ones, so
a stopped run resumes where it was; the run's model folder is trained last and gets the summary in
``metrics.json`` and the card.
"""

from __future__ import annotations

from typing import Any

from ..data.prepare import prepare_data
from ..recipe import Recipe
from ..tasks.base import get_task
from ..training.run import FinetuneResult, RunBuild, run_folder
from .cross_validation import cross_validate
from .learning_curve import finish_learning_curve, run_learning_curve
from .scratch import run_compared


def run_protocols(recipe: Recipe, write_card: bool = True) -> FinetuneResult:
    """``evaluation.cross_validate`` and ``evaluation.learning_curve`` sub-runs, then the recipe's own run."""
    folder = run_folder(recipe)
    with folder.claimed(recipe.to_yaml()):
        recipe = recipe.replace({"output.overwrite": False})
        seed = recipe.seed
        data = prepare_data(recipe.data, get_task(recipe.task).input_roles, seed)
        added: dict[str, Any] = {}
        if recipe.evaluation.cross_validate:
            added["cross_validation"] = cross_validate(recipe, data, folder.path)
        curve = run_learning_curve(recipe, data, folder.path) if recipe.evaluation.learning_curve else None

        def extra(build: RunBuild, metrics: dict[str, Any]) -> dict[str, Any]:
            if curve is not None:
                added["learning_curve"] = finish_learning_curve(curve, metrics, folder.path)
            return added

        return run_compared(recipe, write_card, extra_metrics=extra, data=data)
