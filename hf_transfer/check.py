"""Pre-flight check (``hf-transfer check``): validate a recipe against its data and model, train nothing."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig

from .data.prepare import prepare_data
from .errors import ModelError
from .hub import check_push_target
from .methods.preflight import method_preflight
from .recipe import AUTO, Recipe
from .tasks.base import TaskAdapter, get_task
from .training.preflight import preflight_training
from .training.run import resolve_class_weights, run_folder
from .transferability.ranking import check_candidates, parse_candidates

SAMPLE_ROWS = 16


def _model_summary(recipe: Recipe) -> dict[str, Any]:
    task = get_task(recipe.task)
    task.check_recipe(recipe)
    if recipe.model.name_or_path == AUTO:
        check_candidates(parse_candidates(recipe.model.candidates), recipe.task)
        return {"source": "auto", "candidates": list(recipe.model.candidates), "rank_by": recipe.model.rank_by}
    summaries = {field: _source_summary(recipe, field, source) for field, source in task.resolve_sources(recipe).items()}
    return next(iter(summaries.values())) if len(summaries) == 1 else summaries


def _source_summary(recipe: Recipe, field: str, source) -> dict[str, Any]:
    if source.kind == "timm":
        return {"source": "timm architecture", "architecture": source.location}
    try:
        config = AutoConfig.from_pretrained(source.location, revision=recipe.model.revision,
                                            trust_remote_code=recipe.model.trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(f"Could not load the config of {field} '{source.location}': {error}") from None
    return {"source": source.kind, "location": source.location, "model_type": config.model_type,
            "architecture": getattr(config, "architecture", None) or (config.architectures or ["?"])[0]}


def _check_sample(task: TaskAdapter, data) -> int:
    """Decode the first rows of each split the way training will; returns how many were checked."""
    checked = 0
    for name, split in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        if split is None:
            continue
        rows = split.select(range(min(SAMPLE_ROWS, len(split))))
        for index, row in enumerate(rows):
            for role, column in data.columns.items():
                if role == "label":
                    continue  # already encoded and checked against the label set by prepare_data
                task.check_value(role, row[column], f"{name} split, row {index}: column '{column}'")
            checked += 1
    return checked


def _input_report(task: TaskAdapter, recipe: Recipe, data) -> dict[str, Any]:
    """What the task measures of its inputs under the recipe's preprocessing (text: tokens per text, the chosen
    ``max_length`` and how many texts it cuts); a task without an ``input_report`` has nothing to add."""
    return task.input_report(recipe, data)


def check_recipe(recipe: Recipe) -> dict[str, Any]:
    run_folder(recipe).check(recipe.to_yaml())  # the run's own rule for where it may write
    check_push_target(recipe.output.hub_model_id, recipe.output.push_to_hub)
    plan = preflight_training(recipe)
    task = get_task(recipe.task)
    seed = recipe.seed
    data = prepare_data(recipe.data, task.input_roles, seed)
    plan.check_split_sizes(data.sizes())
    return {
        "task": recipe.task, "model": _model_summary(recipe), "strategy": recipe.strategy.to_mapping(),
        "columns": data.columns, "labels": data.label_names, "splits": data.sizes(), "split_sources": data.sources,
        "method": method_preflight(recipe, data.label_names),
        "rows_checked": _check_sample(task, data), "output_dir": recipe.output.dir, "notes": data.notes,
        **({"inputs": inputs} if (inputs := _input_report(task, recipe, data)) else {}),
        **({"missing_inputs": data.missing} if data.missing else {}),
        **({"class_weights": weights} if (weights := resolve_class_weights(recipe.data.class_weights, data)) else {}),
        "training": plan.summary(data.sizes()),
    }
