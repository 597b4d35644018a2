"""Sub-runs that resume: a finished sub-run is read back, an unfinished one trains (from its last checkpoint)."""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..data.prepare import PreparedData
from ..recipe import Recipe
from ..training.arguments import distributed_state
from ..training.outputs import METRICS_FILE, RunFolder, record
from ..training.run import ExtraMetrics, RunBuild, run_single

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


@contextmanager
def claimed_for(folder: RunFolder, recipe: Recipe, kind: str) -> Iterator[None]:
    """The run folder claimed by the main process and marked as holding ``kind`` sub-runs, while a comparison
    trains its baselines inside it and then the run itself (an overwrite has set the old ones aside)."""
    state = distributed_state()
    with ExitStack() as claim:
        with state.main_process_first():
            if state.is_main_process:
                claim.enter_context(folder.claimed(recipe.to_yaml()))
                record(folder.path, kind)
        yield


def comparison(compute: Callable[[dict[str, Any]], dict[str, Any]],
               extra_metrics: ExtraMetrics | None = None) -> ExtraMetrics:
    """``extra_metrics`` for the compared run: what ``compute`` derives from its metrics, then the caller's own."""
    def compared(build: RunBuild, metrics: dict[str, Any]) -> dict[str, Any]:
        added = compute(metrics)
        if extra_metrics is not None:
            added.update(extra_metrics(build, {**metrics, **added}))
        return added
    return compared
