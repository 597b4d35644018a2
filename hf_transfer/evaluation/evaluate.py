"""Evaluate a saved model folder on a labelled split (``hf-transfer evaluate``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from ..atomic import check_output_path, short_path, write_atomic
from ..data.prepare import PreparedData, encode_labels, resolve_column, subset
from ..data.sources import load_raw
from ..errors import DataError, ModelError, OutputError
from ..models.sources import resolve_model_source
from ..recipe import Recipe
from ..tasks.base import get_task
from ..training.outputs import RECIPE_FILE
from .extra import load_extra_metrics
from .predict import evaluate_split, predictor


def check_report_path(path: str | Path, overwrite: bool = False) -> Path:
    """``--output`` must be a file we may write, and a new one unless ``--overwrite``: an existing file may be the
    user's own. Checked before evaluating."""
    path = check_output_path(path, "--output")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"--output '{short_path(path)}' already exists; pass --overwrite to replace it, or choose "
                          "another --output file. Nothing was evaluated or written.")
    return path


def write_report(path: str | Path, text: str) -> Path:
    """``write_atomic`` (which removes its temporary file on failure), a failed write as one OutputError."""
    path = check_output_path(path, "--output")
    try:
        return write_atomic(path, text)
    except OSError as error:
        raise OutputError(f"Cannot write --output '{short_path(path)}': {error.strerror or error}. "
                          "Choose another --output file.") from None


def _model_label_names(model_dir: Path) -> list[str]:
    config = AutoConfig.from_pretrained(model_dir)
    return [config.id2label[i] for i in range(len(config.id2label))]


def evaluate_model(model_dir: str | Path, data_path: str, split: str = "test",
                   overrides: list[str] | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Full classification report of the model in ``model_dir`` on ``split`` of ``data_path``."""
    model_dir = Path(model_dir)
    if not (model_dir / RECIPE_FILE).is_file():
        raise ModelError(f"'{model_dir}' has no {RECIPE_FILE}; evaluate needs a folder written by hf-transfer.")
    recipe = Recipe.from_yaml(model_dir / RECIPE_FILE, [f"data.path={data_path}", f"model.name_or_path={model_dir}",
                                                        "model.image=null", "model.text=null",  # the folder has them
                                                        "model.pretrained=true", *(overrides or [])])
    resolve_model_source(str(model_dir), recipe.task, field="model_dir")  # weights and JSON files, before the data
    extra = load_extra_metrics(recipe.evaluation.extra_metrics)  # the run's own evaluate metrics, if any
    raw = load_raw(recipe.data)
    if split not in raw:
        raise DataError(f"Split '{split}' not found in '{data_path}'. Splits: {', '.join(raw)}.")
    dataset = raw[split]
    task = get_task(recipe.task)
    columns = {role: resolve_column(role, getattr(recipe.data, f"{role}_column", None), dataset.column_names,
                                    required=role != "text_pair") for role in task.input_roles}
    columns = {k: v for k, v in columns.items() if v}
    columns["label"] = resolve_column("label", recipe.data.label_column, dataset.column_names)
    names = _model_label_names(model_dir)
    dataset = encode_labels(dataset.select_columns(list(columns.values())), split, columns["label"], names)
    # The run's own test subset (same seeded stratified draw) unless data.max_test_samples is overridden.
    dataset = subset(dataset, recipe.data.max_test_samples, recipe.seed)
    data = PreparedData(train=dataset.select(range(0)), validation=dataset, test=None, label_names=names,
                        columns=columns)
    model, processor = task.load_model(recipe, names)
    inputs = task.model_inputs(recipe, data, model, processor)
    with tempfile.TemporaryDirectory() as scratch:
        return evaluate_split(predictor(model, processor, inputs.collator, batch_size, scratch), inputs.validation,
                              names, split, extra, inputs.groups.get("validation"))
