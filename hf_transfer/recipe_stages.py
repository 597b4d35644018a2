"""Stages as recipe data: source -> target transfer written as a chain of recipe fragments.

A recipe with ``stages:`` lists recipe fragments. Stage ``i`` is the previous stage's sections deep-merged
with fragment ``i`` (``strategy``/``method`` are replaced whole when the fragment names another one, so
options never leak between strategies). Every stage after the first has a ``transfer`` section saying
what it takes from the stage before: ``all`` weights but the head (fine-tuning transfer), the
``backbone`` up to a named layer (feature transfer), the ``architecture`` with fresh weights (structure
transfer) or the ``augmentation`` policy (rule transfer; the model is the stage's own). Running them is
``hf_transfer.stages``; this module only parses and validates, like the rest of the recipe.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, TypeVar

from .config_utils import from_dict, to_dict
from .errors import RecipeError

WEIGHT_CARRIES = ("all", "backbone", "architecture")
TOWER_CARRIES = ("image_tower", "text_tower")
"""A model with several towers takes one tower from the stage before (e.g. a text encoder fine-tuned on a
text task, then fused with an image backbone): ``<tower>_tower`` sets ``model.<tower>`` to that stage's folder."""


def carried_tower(carry: str | None) -> str | None:
    """``text`` for ``carry: text_tower``; None for the other carries."""
    return carry[: -len("_tower")] if carry in TOWER_CARRIES else None


class StageRecipe(Protocol):
    """What stages use of ``hf_transfer.recipe.Recipe`` (that module imports this one, not the reverse)."""

    model: Any
    stages: list[Stage]

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=StageRecipe)


@dataclass
class TransferSection:
    """What a stage takes from the stage before it."""

    carry: Literal["all", "backbone", "architecture", "augmentation", "image_tower", "text_tower"] = "all"
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
    recipe: StageRecipe
    transfer: TransferSection | None = None

    def to_dict(self) -> dict[str, Any]:
        sections = self.recipe.to_dict()
        sections["name"] = self.name
        sections["output"].pop("dir", None)  # always <output>/stages/<name>
        if self.transfer is not None:
            sections["transfer"] = to_dict(self.transfer)
            if self.transfer.carry in WEIGHT_CARRIES:
                sections["model"].pop("name_or_path")  # it comes from the stage before
            if carried_tower(self.transfer.carry) is not None:
                sections["model"].pop(carried_tower(self.transfer.carry))
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


def resolve_stages(data: dict[str, Any], build: Callable[[dict[str, Any]], R]) -> R:
    """Resolve ``stages:`` into one recipe per stage; returns the last stage's recipe holding them all.

    ``build`` is ``Recipe.from_dict`` for a stage-free mapping (passed in: ``Recipe`` calls this function).
    """
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
        tower = carried_tower(section.carry) if section is not None else None
        if tower is not None:
            fragment_model = fragment.get("model") or {}
            if fragment_model.get(tower) is not None:
                raise RecipeError(f"'{where}.model.{tower}' is set, but transfer.carry: {section.carry} takes it from "
                                  f"stage '{stages[-1].name}'. Remove it.")
            # the source stage's own model is not this stage's: only the carried tower comes from it
            merged = {**merged, "model": {k: v for k, v in (merged.get("model") or {}).items()
                                          if k not in ("name_or_path", "candidates")}}
            merged["model"][tower] = "(carried)"  # a placeholder: the stage runner sets the folder
        merged = merge_fragment(merged, fragment)
        last = i == len(fragments) - 1
        output = {**(merged.get("output") or {}), "dir": str(root if last else root / "stages" / name)}
        if not last:
            output["push_to_hub"] = False
        try:
            recipe = build({**merged, "name": name, "output": output})
        except RecipeError as error:
            raise RecipeError(f"{where} ({name}): {error}") from None
        if recipe.model.is_auto:
            raise RecipeError(f"'{where}' ({name}): model.name_or_path: auto is not supported inside stages; rank the "
                              "candidates first (hf-transfer rank) and name the winner.")
        stages.append(Stage(name=name, recipe=recipe, transfer=section))
    final = build({**merged, "name": top_name, "output": {**(merged.get("output") or {}), "dir": str(root)}})
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


__all__ = ["WEIGHT_CARRIES", "TOWER_CARRIES", "carried_tower", "TransferSection", "Stage", "merge_fragment", "resolve_stages"]
