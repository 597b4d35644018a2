"""Evaluate a saved model folder on a labelled split (``hf-transfer evaluate``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..data.prepare import PreparedData, encode_labels, resolve_column, subset
from ..data.sources import load_raw
from ..errors import DataError, ModelError, OutputError
from ..recipe import Recipe
from ..tasks.base import get_task
from ..training.outputs import RECIPE_FILE


def check_output_path(path: str | Path, flag: str, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work: a file where a folder is wanted (or the
    reverse), a file on the way to it, or a folder without write permission. Missing folders are created later."""
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise OutputError(f"{flag} '{_short(path)}' is a {'file' if folder else 'folder'}, not a {kind}; "
                          f"give the path of a new {kind}.")
    start = path if path.is_dir() else path.parent
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{flag} '{_short(path)}' cannot be created: '{_short(existing)}' is a file, not a "
                          f"folder. Choose another {flag}.")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{flag} '{_short(path)}' cannot be written: no write permission on "
                          f"'{_short(existing)}'. Choose another {flag}.")
    return path


def write_report(path: str | Path, text: str) -> Path:
    """``write_atomic`` (which removes its temporary file on failure), a failed write as one OutputError."""
    from ..atomic import write_atomic

    path = check_output_path(path, "--output")
    try:
        return write_atomic(path, text)
    except OSError as error:
        raise OutputError(f"Cannot write --output '{_short(path)}': {error.strerror or error}. "
                          "Choose another --output file.") from None


def _short(path: Path, limit: int = 80) -> str:
    text = str(path)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _model_label_names(model_dir: Path) -> list[str]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return [config.id2label[i] for i in range(len(config.id2label))]


def evaluate_model(model_dir: str | Path, data_path: str, split: str = "test",
                   overrides: list[str] | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Full classification report of the model in ``model_dir`` on ``split`` of ``data_path``."""
    from ..training.arguments import evaluation_arguments
    from ..training.run import evaluate_split
    from ..training.trainer import TransferTrainer
    from ..strategies import create_strategy
    from ..models.layout import ParameterLayout
    from ..models.sources import resolve_model_source

    model_dir = Path(model_dir)
    if not (model_dir / RECIPE_FILE).is_file():
        raise ModelError(f"'{model_dir}' has no {RECIPE_FILE}; evaluate needs a folder written by hf-transfer.")
    recipe = Recipe.from_yaml(model_dir / RECIPE_FILE, [f"data.path={data_path}", f"model.name_or_path={model_dir}",
                                                        "model.pretrained=true", *(overrides or [])])
    resolve_model_source(str(model_dir), recipe.task, field="model_dir")  # weights and JSON files, before the data
    raw = load_raw(recipe.data)
    if split not in raw:
        raise DataError(f"Split '{split}' not found in '{data_path}'. Splits: {', '.join(raw)}.")
    dataset = raw[split]
    task = get_task(recipe.task)
    columns = {role: resolve_column(role, getattr(recipe.data, f"{role}_column"), dataset.column_names,
                                    required=role != "text_pair") for role in task.input_roles}
    columns = {k: v for k, v in columns.items() if v}
    columns["label"] = resolve_column("label", recipe.data.label_column, dataset.column_names)
    names = _model_label_names(model_dir)
    dataset = encode_labels(dataset.select_columns(list(columns.values())), split, columns["label"], names)
    # The run's own test subset (same seeded stratified draw) unless data.max_test_samples is overridden.
    dataset = subset(dataset, recipe.data.max_test_samples, int(recipe.training.get("seed", 42)))
    data = PreparedData(train=dataset.select(range(0)), validation=dataset, test=None, label_names=names,
                        columns=columns)
    model, processor = task.load_model(recipe, names)
    inputs = task.model_inputs(recipe, data, model, processor)
    with tempfile.TemporaryDirectory() as scratch:
        args = evaluation_arguments(scratch, batch_size)
        trainer = TransferTrainer(model=model, args=args, data_collator=inputs.collator, processing_class=processor,
                                  strategy=create_strategy("full", None, ParameterLayout((), ())))
        return evaluate_split(trainer, inputs.validation, names, split)
