"""``model.name_or_path: auto``: score ``model.candidates`` on the train split, then train the best.

The ranking is written into the run folder (``ranking.json``/``.md``/``.png``), added to ``metrics.json`` as
``backbone_selection`` and shown in the model card; the saved ``recipe.yaml`` names the chosen backbone,
so the run reproduces without ranking again.
"""

from __future__ import annotations

import logging
from typing import Any

from ..data.prepare import prepare_data
from ..recipe import Recipe
from ..tasks.base import get_task
from ..training.outputs import record
from ..training.run import FinetuneResult, RunBuild, run_folder
from ..transferability.ranking import Candidate, rank_candidates
from ..transferability.report import JSON_FILE, MARKDOWN_FILE, PLOT_FILE, write_ranking
from .scratch import run_compared

logger = logging.getLogger(__name__)


def finetune_auto(recipe: Recipe, write_card: bool = True) -> FinetuneResult:
    """Rank the candidates, then run the recipe with the best one, the ranking in its metrics and folder."""
    get_task(recipe.task).check_recipe(recipe)
    folder = run_folder(recipe)
    folder.check(recipe.to_yaml())  # a finished run or a foreign folder is refused before minutes of ranking
    seed = recipe.seed
    data = prepare_data(recipe.data, get_task(recipe.task).input_roles, seed)
    ranking = rank_candidates(recipe, data)
    chosen = Candidate.parse(ranking.best().candidate)
    logger.info("model.name_or_path: auto chose %s (%s %.4f)", chosen.spec, ranking.rank_by,
                ranking.best().scores[ranking.rank_by])

    def add_ranking(build: RunBuild, metrics: dict[str, Any]) -> dict[str, Any]:
        if build.trainer.is_world_process_zero():
            record(folder.path, JSON_FILE, MARKDOWN_FILE, PLOT_FILE)
            write_ranking(ranking, folder.path, overwrite=True)
        return {"backbone_selection": ranking.to_dict()}

    return run_compared(chosen.recipe(recipe), write_card, extra_metrics=add_ranking, data=data)
