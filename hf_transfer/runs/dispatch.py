"""``finetune(recipe)``: which run made of runs a recipe asks for, down to the single run."""

from __future__ import annotations

from ..recipe import AUTO, Recipe
from ..training.run import FinetuneResult
from .auto import finetune_auto
from .modalities import run_modalities
from .protocols import run_protocols
from .scratch import run_compared
from .source_only import run_source_only
from .stages import run_stages


def finetune(recipe: Recipe, write_card: bool = True) -> FinetuneResult:
    """Run a recipe end to end and write its model folder; resumes from the last checkpoint if any.

    ``model.name_or_path: auto`` ranks ``model.candidates`` first; stages, cross-validation and learning curves
    train their sub-runs first; ``evaluation.compare_modalities`` trains each input alone first and
    ``evaluation.compare_to_scratch`` the from-scratch baseline; ``evaluation.compare_source_only`` trains the
    domain-adaptation recipe without its adversarial term first.
    """
    if recipe.evaluation.compare_source_only:  # first, so that it refuses the protocols it does not combine with
        return run_source_only(recipe, write_card)
    if recipe.model.name_or_path == AUTO:
        return finetune_auto(recipe, write_card)
    if recipe.stages:
        return run_stages(recipe, write_card)
    if recipe.evaluation.cross_validate or recipe.evaluation.learning_curve:
        return run_protocols(recipe, write_card)
    if recipe.evaluation.compare_modalities:
        return run_modalities(recipe, write_card)
    return run_compared(recipe, write_card)
