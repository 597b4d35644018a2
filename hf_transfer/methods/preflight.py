"""The ``method`` section's pre-flight, shared by ``hf-transfer check`` and the training run."""

from __future__ import annotations

from typing import Any

from ..recipe import Recipe
from ..tasks.base import get_task
from . import create_method


def method_preflight(recipe: Recipe, label_names: list[str] | None = None) -> dict[str, Any]:
    """Check what the recipe's method will load; ``{}`` without a method.

    Call it once the run's data is prepared (``label_names``) and before the run folder is written: a teacher
    or target with another label set is then caught too. Without ``label_names`` the label checks are skipped.
    """
    if recipe.method.name is None:
        return {}
    method = create_method(recipe.method.name, recipe.method.options)
    return {"name": recipe.method.name, **method.preflight(recipe, get_task(recipe.task), label_names)}
