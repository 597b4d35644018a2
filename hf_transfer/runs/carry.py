"""Which weights a target stage takes from its source stage (``stages[i].transfer.carry``).

Fine-tuning transfer keeps everything but the head; feature transfer keeps the backbone up to a named
layer and re-initialises the rest (Yosinski et al., "How transferable are features in deep neural
networks?", NeurIPS 2014); structure transfer keeps nothing but the architecture. The layers come from
``discover_layout``, so the same names work for timm and transformers backbones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn
from transformers import set_seed

from ..errors import RecipeError
from ..models.layout import ParameterLayout, discover_layout


def _module(key: str) -> str:
    return key.rsplit(".", 1)[0]


def layer_label(layer: tuple[str, ...]) -> str:
    """The dotted prefix all parameter names of a layer share (``timm_model.blocks.3.0``)."""
    parts = [name.split(".") for name in layer]
    common = []
    for column in zip(*parts):
        if len(set(column)) > 1:
            break
        common.append(column[0])
    return ".".join(common[:-1] if len(layer) == 1 else common) or layer[0]


def last_layer_index(layout: ParameterLayout, up_to: str, where: str) -> int:
    """Index of the deepest backbone layer named by ``up_to`` (a parameter-name part, or a 1-based number)."""
    if up_to.isdigit():
        number = int(up_to)
        if not 1 <= number <= layout.num_layers:
            raise RecipeError(f"'{where}' = {number}: the backbone has layers 1 to {layout.num_layers} "
                              "(1 = stem/embeddings).")
        return number - 1
    matches = [i for i, layer in enumerate(layout.layers) if any(f".{up_to}." in f".{name}" for name in layer)]
    if not matches:
        labels = [layer_label(layer) for layer in layout.layers]
        shown = ", ".join(labels[:40]) + (" ..." if len(labels) > 40 else "")
        raise RecipeError(f"'{where}' = '{up_to}' matches no backbone parameter. Layers, input first: {shown}.")
    return matches[-1]


def carried_keys(model: nn.Module, carry: str, up_to: str | None = None, where: str = "transfer.up_to") -> set[str]:
    """State-dict keys (parameters and their modules' buffers) that ``carry`` copies from the source."""
    layout = discover_layout(model)
    keys = set(model.state_dict())
    if carry == "all":
        head = {_module(name) for name in layout.head}
        return {key for key in keys if _module(key) not in head}
    if carry == "backbone":
        kept = layout.layers[: last_layer_index(layout, str(up_to), where) + 1]
        modules = {_module(name) for layer in kept for name in layer}
        return {key for key in keys if _module(key) in modules}
    return set()


def write_initial_weights(task: Any, load_recipe: Any, source_labels: list[str], target_labels: list[str],
                          carry: str, up_to: str | None, where: str, destination: Path) -> Path:
    """Save a model folder: the source architecture with a fresh head for ``target_labels`` and the carried weights.

    ``load_recipe`` points ``model.name_or_path`` at the source stage's folder. The folder is written under a
    temporary name and renamed, so a killed run never leaves a half-written one behind.
    """
    source, processor = task.load_model(load_recipe.replace({"model.pretrained": True}), source_labels)
    set_seed(load_recipe.seed)
    fresh, _ = task.load_model(load_recipe.replace({"model.pretrained": False}), target_labels)
    state = source.state_dict()
    missing, unexpected = fresh.load_state_dict(
        {key: state[key] for key in carried_keys(fresh, carry, up_to, where)}, strict=False)
    assert not unexpected, unexpected  # same architecture, so every carried key exists
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    fresh.save_pretrained(staging)
    task.save_processor(processor, fresh, staging)
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)
    return destination
