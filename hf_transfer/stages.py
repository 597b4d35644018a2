"""Stages: source -> target transfer as a chain of recipes, each inheriting from the stage before.

A recipe with ``stages:`` lists recipe fragments. Stage ``i`` is the previous stage's sections deep-merged
with fragment ``i`` (``strategy``/``method`` are replaced whole when the fragment names another one, so
options never leak between strategies). Every stage after the first has a ``transfer`` section saying
what it takes from the stage before: ``all`` weights but the head (fine-tuning transfer), the
``backbone`` up to a named layer (feature transfer), the ``architecture`` with fresh weights (structure
transfer) or the ``augmentation`` policy (rule transfer; the model is the stage's own). Each stage is a
normal ``finetune`` run in ``<output>/stages/<name>``; the last one is the run's model folder.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config_utils import from_dict, to_dict
from .errors import RecipeError
from .recipe import AUTO, Recipe
from .training.outputs import METRICS_FILE, RunFolder, record

logger = logging.getLogger(__name__)

WEIGHT_CARRIES = ("all", "backbone", "architecture")
STAGES_FILE = "stages.yaml"
"""The whole staged recipe, next to the last stage's own ``recipe.yaml`` in the model folder."""


@dataclass
class TransferSection:
    """What a stage takes from the stage before it."""

    carry: Literal["all", "backbone", "architecture", "augmentation"] = "all"
    up_to: str | None = None
    """``carry: backbone`` only: the last carried layer, as a parameter-name part (``blocks.3``,
    ``encoder.layer.1``) or a layer number (1 = stem/embeddings); later layers and the head start fresh."""

    def __post_init__(self) -> None:
        if (self.carry == "backbone") != (self.up_to is not None):
            raise RecipeError("'transfer.up_to' names the last carried layer; it is required with carry: backbone "
                              f"and meaningless otherwise (carry: {self.carry}, up_to: {self.up_to}).")


@dataclass
class Stage:
    """One stage as written (inherited sections resolved); ``transfer`` is None for the first."""

    name: str
    recipe: Recipe
    transfer: TransferSection | None = None

    def to_dict(self) -> dict[str, Any]:
        sections = self.recipe.to_dict()
        sections["name"] = self.name
        sections["output"].pop("dir", None)  # always <output>/stages/<name>
        if self.transfer is not None:
            sections["transfer"] = to_dict(self.transfer)
            if self.transfer.carry in WEIGHT_CARRIES:
                sections["model"].pop("name_or_path")  # it comes from the stage before
        return sections


def merge_fragment(base: dict[str, Any], fragment: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """``base`` deep-merged with ``fragment``; a strategy or method of another name replaces the old one."""
    merged = copy.deepcopy(base)
    for key, value in fragment.items():
        old = merged.get(key)
        if top and key in ("strategy", "method") and _section_name(old) != _section_name(value):
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(old, dict):
            merged[key] = merge_fragment(old, value, top=False)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _section_name(section: Any) -> Any:
    return section.get("name") if isinstance(section, dict) else section


def resolve_stages(data: dict[str, Any]) -> Recipe:
    """Resolve ``stages:`` into one recipe per stage; returns the last stage's recipe holding them all."""
    fragments = data.get("stages")
    if not isinstance(fragments, list) or not fragments:
        raise RecipeError("'stages' must be a list of recipe fragments (source first), e.g. "
                          "[{name: source, data: {...}}, {name: target, data: {...}, transfer: {carry: all}}].")
    top = {key: value for key, value in data.items() if key != "stages"}
    top_name = str(top.pop("name", None) or "run")
    root = Path((top.get("output") or {}).get("dir") or Path("runs") / top_name)
    stages: list[Stage] = []
    merged = top
    for i, fragment in enumerate(fragments):
        where = f"stages.{i}"
        if not isinstance(fragment, dict):
            raise RecipeError(f"'{where}' must be a mapping of recipe sections; got {fragment!r}.")
        fragment = copy.deepcopy(fragment)
        name = str(fragment.pop("name", None) or f"stage{i}")
        transfer = fragment.pop("transfer", None)
        _check_fragment(fragment, where, name, [s.name for s in stages], first=i == 0, transfer=transfer)
        section = None if i == 0 else from_dict(TransferSection, transfer, f"{where}.transfer.")
        if section is not None and section.carry in WEIGHT_CARRIES and "name_or_path" in (fragment.get("model") or {}):
            raise RecipeError(f"'{where}.model.name_or_path' is set, but transfer.carry: {section.carry} takes the "
                              f"model from stage '{stages[-1].name}'. Remove it, or use carry: augmentation.")
        merged = merge_fragment(merged, fragment)
        last = i == len(fragments) - 1
        output = {**(merged.get("output") or {}), "dir": str(root if last else root / "stages" / name)}
        if not last:
            output["push_to_hub"] = False
        try:
            recipe = Recipe.from_dict({**merged, "name": name, "output": output})
        except RecipeError as error:
            raise RecipeError(f"{where} ({name}): {error}") from None
        if recipe.model.name_or_path == AUTO:
            raise RecipeError(f"'{where}' ({name}): model.name_or_path: auto is not supported inside stages; rank the "
                              "candidates first (hf-transfer rank) and name the winner.")
        stages.append(Stage(name=name, recipe=recipe, transfer=section))
    final = Recipe.from_dict({**merged, "name": top_name, "output": {**(merged.get("output") or {}), "dir": str(root)}})
    final.stages = stages
    return final


def _check_fragment(fragment: dict, where: str, name: str, earlier: list[str], first: bool, transfer: Any) -> None:
    if name in earlier:
        raise RecipeError(f"'{where}.name' = '{name}' is used by an earlier stage; stage names name their folders.")
    if first and transfer is not None:
        raise RecipeError(f"'{where}.transfer': the first stage has no stage before it to carry anything from.")
    if "stages" in fragment:
        raise RecipeError(f"'{where}.stages': stages do not nest.")
    if (fragment.get("output") or {}).get("dir") is not None:
        raise RecipeError(f"'{where}.output.dir': stage folders are <output.dir>/stages/<name>; set output.dir "
                          "at the top of the recipe.")
    evaluation = fragment.get("evaluation") or {}
    for key in ("cross_validate", "learning_curve"):
        if evaluation.get(key) is not None:
            raise RecipeError(f"'{where}.evaluation.{key}' is not supported inside stages; "
                              "run it on a single-stage recipe.")


# --------------------------------------------------------------------------------------------- running
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
        recipes.append(run)
    return recipes


def check_layer_names(recipe: Recipe) -> None:
    """Pre-flight: every ``transfer.up_to`` names a layer of the model it will cut, before anything trains."""
    from .models.carry import carried_keys
    from .tasks.base import get_task

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
    from .training.run import run_folder

    root = Path(recipe.output.dir)
    runs = run_recipes(recipe)
    folder = run_folder(recipe)
    check_layer_names(recipe)
    with folder.claimed(runs[-1].to_yaml()):
        record(root, "stages")
        folder.write_text(STAGES_FILE, recipe.to_yaml())
        return _train_stages(recipe, runs, write_card)


def _train_stages(recipe: Recipe, runs: list[Recipe], write_card: bool):
    from .evaluation.forgetting import source_forgetting
    from .models.carry import write_initial_weights
    from .tasks.base import get_task
    from .training.run import run_single

    lineage: list[dict[str, Any]] = []
    result = None
    for i, (stage, run) in enumerate(zip(recipe.stages, runs)):
        carry = stage.transfer.carry if stage.transfer else None
        source = lineage[-1] if lineage else None
        if carry in ("all", "backbone") and not RunFolder(run.output.dir).is_finished():
            initial = initial_weights_dir(recipe, stage)
            if not (initial / "config.json").is_file():
                from .data.prepare import prepare_data

                labels = prepare_data(run.data, get_task(run.task).input_roles,
                                      int(run.training.get("seed", 42))).label_names
                write_initial_weights(get_task(run.task), run.replace({"model.name_or_path": source["folder"]}),
                                      source["labels"], labels, carry, stage.transfer.up_to,
                                      f"stages.{i}.transfer.up_to", initial)
        entry = {"stage": stage.name, "folder": str(Path(run.output.dir)), "data": _data_text(run),
                 "base_model": run.model.name_or_path if run.model.pretrained else None,
                 "started_from": stage.recipe.model.name_or_path if carry in (None, "augmentation")
                 else f"stage '{source['stage']}' ({carry}" + (f" up to {stage.transfer.up_to})" if carry == "backbone" else ")"),
                 "carry": carry}
        last = i == len(runs) - 1

        def extra(trainer, metrics, entry=entry, source=source, carry=carry, last=last, source_recipe=runs[i - 1]):
            added: dict[str, Any] = {}
            if carry in ("all", "backbone"):
                added["forgetting"] = source_forgetting(source_recipe, Path(source["folder"]), source["full"],
                                                        trainer.model, source["stage"])
            if last:
                added["stages"] = [*(_public(e) for e in lineage), {**_public(entry), "metrics": _headline(metrics)}]
            return added

        if RunFolder(run.output.dir).is_finished():
            logger.info("Stage '%s' is finished (%s); skipping it", stage.name, run.output.dir)
            metrics = json.loads((Path(run.output.dir) / METRICS_FILE).read_text())
        else:
            logger.info("Stage %d/%d: '%s' -> %s", i + 1, len(runs), stage.name, run.output.dir)
            result = run_single(run, write_card=write_card, extra_metrics=extra)
            metrics = result.metrics
        lineage.append({**entry, "metrics": _headline(metrics), "labels": metrics["labels"], "full": metrics})
    return result


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in ("labels", "full")}


def _data_text(recipe: Recipe) -> str:
    return recipe.data.path + (f" ({recipe.data.name})" if recipe.data.name else "")
