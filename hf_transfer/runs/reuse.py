"""Sub-runs that resume: a finished sub-run is read back, an unfinished one trains (from its last checkpoint)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..data.prepare import PreparedData
from ..recipe import Recipe
from ..training.outputs import METRICS_FILE, RunFolder
from ..training.run import run_single

logger = logging.getLogger(__name__)

#: Sub-runs never repeat the protocol, push, or train their own scratch baseline.
SUB_RUN = {"evaluation.cross_validate": None, "evaluation.learning_curve": None,
           "evaluation.compare_to_scratch": False, "output.push_to_hub": False, "output.overwrite": False}


def finished_metrics(output_dir: str | Path) -> dict[str, Any] | None:
    """``metrics.json`` of the finished run in ``output_dir``, or None while it is missing or unfinished."""
    if not RunFolder(output_dir).is_finished():
        return None
    return json.loads((Path(output_dir) / METRICS_FILE).read_text())


def run_or_reuse(recipe: Recipe, data: PreparedData | None = None) -> dict[str, Any]:
    """Metrics of a sub-run: read from its folder when finished, else trained now (resuming if started)."""
    metrics = finished_metrics(recipe.output.dir)
    if metrics is not None:
        logger.info("Reusing the finished run in %s", recipe.output.dir)
        return metrics
    return run_single(recipe, write_card=False, data=data).metrics
