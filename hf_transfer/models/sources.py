"""Where a model comes from: a local folder, a PyPI wheel, a Hub id, or what the task makes of a bare name
(the image task: a timm architecture)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import ModelError
from ..registry import TASKS
from .pypi_weights import resolve_pypi_model
from .weights import check_model_folder, where

#: The recipe field a backbone comes from; a teacher or an evaluated folder passes its own.
MODEL_FIELD = "model.name_or_path"
#: The recipe field a distillation teacher comes from.
TEACHER_FIELD = "method.teacher"


@dataclass(frozen=True)
class ModelSource:
    kind: str
    """``local``, ``pypi``, ``timm`` (architecture name) or ``hub``."""
    location: str
    """What ``from_pretrained`` (or ``timm.create_model`` for ``timm``) receives."""


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``user/name``; anything with more slashes can only be a folder."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")
            or os.sep in name and Path(name).expanduser().exists())


def is_timm_config(config: dict) -> bool:
    """A ``config.json`` saved from a timm model (``TimmWrapperForImageClassification`` or timm's own)."""
    return config.get("model_type") == "timm_wrapper" or ("architecture" in config and "pretrained_cfg" in config)


class ModelFit(Protocol):
    """What a task tells this floor about the models it loads (``hf_transfer.tasks.base.TaskAdapter``)."""

    name: str
    auto_class: type | None

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None: ...

    def bare_name_source(self, name: str, field: str) -> ModelSource | None: ...


def task_fit(task: str | ModelFit) -> ModelFit:
    """The adapter of ``task``; a task name is looked up in the task registry."""
    return TASKS.lookup(task)() if isinstance(task, str) else task


def check_task_fit(path: Path, name: str, task: str | ModelFit, field: str = MODEL_FIELD) -> None:
    """Reject a saved model of another modality before any data is loaded or weights are read."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{where(field, name)}: config.json cannot be read ({error}).") from None
    if not isinstance(config, dict):
        raise ModelError(f"{where(field, name)}: config.json is not a JSON object.")
    task_fit(task).check_config(config, name, field)


#: Weight files that ``torch.load`` unpickles; ``training_args.bin`` is the Trainer's, and never read here.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")


def refuse_pickled_weights(path: Path, name: str, field: str = MODEL_FIELD) -> None:
    """A folder with pickled weights and no safetensors is refused before anything reads it.

    transformers 5 would fall back to ``pytorch_model.bin`` (with ``weights_only=True``), but a local pickle
    has no known sha256 to check it against; hf-transfer reads weights from safetensors only.
    """
    pickles = sorted(p.name for p in path.iterdir()
                     if p.is_file() and p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickles and not any(path.glob("*.safetensors")):
        raise ModelError(
            f"{where(field, name)} holds only pickled weights ({', '.join(pickles)}); hf-transfer loads "
            "weights from safetensors only. If you trust the file, convert it once, e.g. python -c \"from "
            f"transformers import AutoModel; AutoModel.from_pretrained('{path}').save_pretrained('{path}')\" "
            "(this writes model.safetensors).")


def resolve_model_source(name: str, task: str | ModelFit, field: str = MODEL_FIELD) -> ModelSource:
    """Where ``name`` points; a local or PyPI folder is checked (task fit, JSON files, weight headers) on the way.

    ``task``: the task's adapter or its name. ``field`` is the recipe field that named the model, quoted in
    every error.
    """
    fit = task_fit(task)
    if name.startswith("pypi:"):
        location = resolve_pypi_model(name)
        check_task_fit(Path(location), name, fit, field)
        check_model_folder(Path(location), fit.auto_class, field, name)
        return ModelSource("pypi", str(location))
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            raise ModelError(f"{where(field, name)} does not exist or is not a folder; point it at a model folder "
                             "(one with config.json), a pypi:<name> or a Hub id.")
        if not (path / "config.json").is_file():
            raise ModelError(f"{where(field, name)} has no config.json; point it at a folder written by "
                             "save_pretrained (or by hf-transfer).")
        check_task_fit(path, name, fit, field)
        refuse_pickled_weights(path, name, field)
        check_model_folder(path, fit.auto_class, field, name)
        return ModelSource("local", str(path))
    return fit.bare_name_source(name, field) or ModelSource("hub", name)
