"""``hf_transfer.predict`` and ``hf-transfer predict``: a finished model folder on raw inputs.

The task comes from the folder's ``recipe.yaml`` (written by every run and pushed with it), else from the first
task whose adapter accepts its ``config.json``; the adapter does the rest (image and text folders through
``transformers.pipeline``, image-text folders through the fused model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import DataError, ModelError
from .registry import TASKS
from .tasks.base import TaskAdapter, get_task
from .training.outputs import RECIPE_FILE


def task_of(model_dir: Path) -> TaskAdapter:
    """The adapter of the task that trained ``model_dir``."""
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"'{model_dir}' is not a model folder (no config.json); pass a folder written by hf-transfer.")
    recipe_file = model_dir / RECIPE_FILE
    if recipe_file.is_file():
        try:
            task = (yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}).get("task")
        except (yaml.YAMLError, OSError, AttributeError):
            task = None
        if isinstance(task, str) and task in TASKS:
            return get_task(task)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for name in TASKS:
        adapter = get_task(name)
        try:
            adapter.check_config(config, str(model_dir), "model_dir")
        except ModelError:
            continue
        return adapter
    raise ModelError(f"'{model_dir}' holds a model no hf-transfer task reads.")


def predict(model_dir: str | Path, images: Sequence[Any] | None = None, texts: Sequence[str | None] | None = None,
            text_pairs: Sequence[str] | None = None, top_k: int | None = None) -> list[list[dict[str, Any]]]:
    """For each example, ``[{"label": ..., "score": ...}, ...]`` best first (``top_k`` of them, default all).

    ``images``: paths, PIL images or encoded bytes; ``texts``: strings. An image-text model takes both, one per
    example (``None`` where one is missing); an image or text model takes its own.
    """
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise ModelError(f"Model folder '{model_dir}' does not exist.")
    if top_k is not None and top_k < 1:
        raise DataError(f"top_k must be at least 1; got {top_k}.")
    inputs = {role: list(values) for role, values in
              (("image", images), ("text", texts), ("text_pair", text_pairs)) if values is not None}
    return task_of(model_dir).predict(model_dir, inputs, top_k=top_k)
