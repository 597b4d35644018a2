"""Running stages: source -> target transfer as a chain of runs, each starting from the stage before.

The stages themselves (fragments, ``transfer`` sections, inheritance) are recipe data, parsed in
``hf_transfer.recipe_stages``. Each stage is a normal ``finetune`` run in ``<output>/stages/<name>``; the
last one is the run's model folder.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from ..config_utils import to_dict
from ..data.prepare import PreparedData, prepare_data
from ..methods.preflight import method_preflight
from ..recipe import Recipe
from ..recipe_stages import WEIGHT_CARRIES, Stage, carried_tower
from ..tasks.base import get_task
from ..training.outputs import record
from ..training.preflight import preflight_training
from ..training.run import run_folder
from .carry import carried_keys, write_initial_weights
from .forgetting import source_forgetting
from .reuse import finished_metrics
from .scratch import run_compared

logger = logging.getLogger(__name__)

STAGES_FILE = "stages.yaml"
"""The whole staged recipe, next to the last stage's own ``recipe.yaml`` in the model folder."""


def initial_weights_dir(recipe: Recipe, stage: Stage) -> Path:
    return Path(recipe.output.dir) / "stages" / f"{stage.name}-initial-weights"


def run_recipes(recipe: Recipe) -> list[Recipe]:
    """The recipe each stage actually trains: weight carries start from the previous stage's folder."""
    recipes = []
    for i, stage in enumerate(recipe.stages):
        run = stage.recipe.replace({"output.overwrite": False})
        carry = stage.transfer.carry if stage.transfer else None
        source = recipe.stages[i - 1].recipe if i else None
        if carry in ("all", "backbone"):
            run = run.replace({"model.name_or_path": str(initial_weights_dir(recipe, stage)), "model.pretrained": True})
        elif carry == "architecture":
            run = run.replace({"model.name_or_path": source.output.dir, "model.pretrained": False})
        elif carry == "augmentation":
            run = run.replace({"data.augmentation": to_dict(source.data.augmentation)})
        elif carried_tower(carry) is not None:
            run = run.replace({f"model.{carried_tower(carry)}": source.output.dir})
        recipes.append(run)
    return recipes


def check_layer_names(recipe: Recipe) -> None:
    """Pre-flight: every ``transfer.up_to`` names a layer of the model it will cut, before anything trains."""
    architecture = recipe.stages[0].recipe
    for i, stage in enumerate(recipe.stages):
        if stage.transfer is None or stage.transfer.carry not in WEIGHT_CARRIES:
            architecture = stage.recipe
        elif stage.transfer.carry == "backbone":
            model, _ = get_task(architecture.task).load_model(architecture.replace({"model.pretrained": False}),
                                                              ["a", "b"])
            carried_keys(model, "backbone", stage.transfer.up_to, f"stages.{i}.transfer.up_to")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {split: {key: metrics[split][key] for key in ("accuracy", "f1_macro", "num_samples")}
            for split in ("validation", "test") if split in metrics}


def run_stages(recipe: Recipe, write_card: bool = True):
    """Train every stage in order, skipping finished ones; returns the last stage's ``FinetuneResult``."""
    root = Path(recipe.output.dir)
    runs = run_recipes(recipe)
    folder = run_folder(recipe)
    folder.check(runs[-1].to_yaml())
    check_layer_names(recipe)
    data = _preflight_stages(recipe, runs)
    with folder.claimed(runs[-1].to_yaml()):
        record(root, "stages")
        folder.write_text(STAGES_FILE, recipe.to_yaml())
        return _train_stages(recipe, runs, data, write_card)


def _preflight_stages(recipe: Recipe, runs: list[Recipe]) -> dict[int, PreparedData]:
    """Every unfinished stage's training arguments, model source, data and method, before the first one trains.

    A stage whose model comes from the stage before (``carry``) has no folder to check yet. Returns each
    stage's prepared data, which its run then uses.
    """
    prepared = {}
    for i, (stage, run) in enumerate(zip(recipe.stages, runs)):
        if finished_metrics(run.output.dir) is not None:
            continue
        preflight_training(run)
        carry = stage.transfer.carry if stage.transfer else None
        if carry not in WEIGHT_CARRIES:
            task = get_task(run.task)
            task.check_recipe(run)
            tower = carried_tower(carry)  # carried from a stage not trained yet: its folder is checked when loaded
            task.resolve_sources(run.replace({f"model.{tower}": None}) if tower else run)
        prepared[i] = prepare_data(run.data, get_task(run.task).input_roles, run.seed)
        method_preflight(run, prepared[i].label_names)
    return prepared


def _train_stages(recipe: Recipe, runs: list[Recipe], prepared: dict[int, PreparedData], write_card: bool):
    lineage: list[dict[str, Any]] = []
    result = None
    for i, (stage, run) in enumerate(zip(recipe.stages, runs)):
        source = lineage[-1] if lineage else None
        entry = _lineage_entry(stage, run, source)
        metrics = finished_metrics(run.output.dir)
        if metrics is not None:
            logger.info("Stage '%s' is finished (%s); skipping it", stage.name, run.output.dir)
        else:
            logger.info("Stage %d/%d: '%s' -> %s", i + 1, len(runs), stage.name, run.output.dir)
            data = prepared[i]
            if entry["carry"] in ("all", "backbone"):
                _write_initial_weights(recipe, i, run, source, data.label_names)
            extra = partial(_stage_metrics, entry=entry, source=source, source_recipe=runs[i - 1], lineage=lineage,
                            last=i == len(runs) - 1)
            result = run_compared(run, write_card=write_card, extra_metrics=extra, data=data)
            metrics = result.metrics
        lineage.append({**entry, "metrics": _headline(metrics), "labels": metrics["labels"], "full": metrics})
    return result


def _lineage_entry(stage: Stage, run: Recipe, source: dict[str, Any] | None) -> dict[str, Any]:
    """What the lineage table says of a stage: its data, starting point and what it carried."""
    carry = stage.transfer.carry if stage.transfer else None
    if carry in (None, "augmentation"):
        started_from = stage.recipe.model.name_or_path
    else:
        started_from = f"stage '{source['stage']}' ({carry}" + (
            f" up to {stage.transfer.up_to})" if carry == "backbone" else ")")
    bases = get_task(run.task).base_models(run)
    return {"stage": stage.name, "folder": str(Path(run.output.dir)), "data": _data_text(run),
            "base_model": ", ".join(bases) or None, "started_from": started_from,
            "carry": carry}


def _write_initial_weights(recipe: Recipe, i: int, run: Recipe, source: dict[str, Any], labels: list[str]) -> None:
    """The stage's starting folder: the source stage's carried weights with a fresh head for ``labels``."""
    stage = recipe.stages[i]
    initial = initial_weights_dir(recipe, stage)
    if not (initial / "config.json").is_file():
        write_initial_weights(get_task(run.task), run.replace({"model.name_or_path": source["folder"]}),
                              source["labels"], labels, stage.transfer.carry, stage.transfer.up_to,
                              f"stages.{i}.transfer.up_to", initial)


def _stage_metrics(build, metrics: dict[str, Any], *, entry: dict[str, Any], source: dict[str, Any] | None,
                   source_recipe: Recipe, lineage: list[dict[str, Any]], last: bool) -> dict[str, Any]:
    """Added to a stage's metrics: forgetting on the source task, and the whole lineage for the last stage."""
    added: dict[str, Any] = {}
    if entry["carry"] in ("all", "backbone"):
        added["forgetting"] = source_forgetting(source_recipe, Path(source["folder"]), source["full"], build.model,
                                                source["stage"])
    if last:
        added["stages"] = [*(_public(e) for e in lineage), {**_public(entry), "metrics": _headline(metrics)}]
    return added


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in ("labels", "full")}


def _data_text(recipe: Recipe) -> str:
    return recipe.data.path + (f" ({recipe.data.name})" if recipe.data.name else "")
