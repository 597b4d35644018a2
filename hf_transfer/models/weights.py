"""Is a model folder's weight file sound, and did loading it fill the model? Checked before anything trains."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from safetensors import SafetensorError, safe_open
from torch import nn
from transformers.utils import logging as transformers_logging

from ..errors import ModelError
from .layout import discover_layout

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

#: JSON files ``from_pretrained`` reads from a model folder (model, tokenizer, processor); ``config.json`` too.
LOADER_JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "added_tokens.json", "preprocessor_config.json", "generation_config.json", WEIGHTS_INDEX_NAME)


def short(value: Any, limit: int = 60) -> str:
    """``value`` as text, cut to ``limit`` characters so that one error line stays one readable line."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def where(field: str, name: str) -> str:
    """``'field' = 'name'``; a long path keeps its end, the part that tells folders apart."""
    name = str(name)
    return f"'{field}' = '{name if len(name) <= 80 else '...' + name[-77:]}'"


def check_json_files(folder: Path, field: str, name: str) -> None:
    """A truncated or hand-edited JSON file would otherwise fail deep inside transformers, naming no file."""
    for file_name in LOADER_JSON_FILES:
        path = folder / file_name
        if not path.is_file():
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ModelError(f"{where(field, name)}: {file_name} is not valid JSON ({short(error)}); copy the "
                             "folder again or re-save it with save_pretrained.") from None


def check_safetensors(path: Path, field: str, name: str) -> list[str]:
    """The tensor names of one safetensors file, after ``safe_open`` has validated its header.

    ``safe_open`` reads the 8-byte header length and refuses a file shorter than 8 bytes, a length beyond the
    file ("header too large"), a header that is not JSON, and tensors whose shape, dtype and data offsets do not
    tile the data area exactly (a truncated file: "incomplete metadata"). It maps the file, reading no tensor.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as error:
        reason = str(error).removeprefix("Error while deserializing header: ")
        raise ModelError(f"{where(field, name)}: {path.name} is damaged or not a safetensors file ({short(reason)}; "
                         f"{path.stat().st_size if path.exists() else 0} bytes); copy or download it again, or re-save "
                         "the model with save_pretrained.") from None


def check_weight_files(folder: Path, field: str, name: str) -> None:
    """Validate ``model.safetensors``, or every shard a ``model.safetensors.index.json`` names."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{where(field, name)}: {WEIGHTS_INDEX_NAME} has no 'weight_map'; re-save the model "
                             "with save_pretrained.")
        for shard in sorted(set(weight_map.values())):
            path = folder / str(shard)
            if not path.is_file():
                raise ModelError(f"{where(field, name)}: {WEIGHTS_INDEX_NAME} names the shard '{short(shard)}', "
                                 "which is missing; copy the whole folder again.")
            keys = set(check_safetensors(path, field, name))
            absent = sorted(key for key, file in weight_map.items() if file == shard and key not in keys)
            if absent:
                raise ModelError(f"{where(field, name)}: shard '{short(shard)}' lacks {len(absent)} tensor(s) its "
                                 f"index lists ({listing(absent)}); copy the whole folder again.")
    elif (folder / WEIGHTS_NAME).is_file():
        check_safetensors(folder / WEIGHTS_NAME, field, name)


def check_model_folder(folder: Path, auto_class: type | None, field: str, name: str) -> None:
    """Everything ``from_pretrained`` will read from a local folder, checked before any data is loaded.

    ``auto_class``: the task's ``AutoModelFor...`` class (``None``: no weight probe).
    """
    check_json_files(folder, field, name)
    check_weight_files(folder, field, name)
    check_weights_fit(folder, auto_class, field, name)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """The probe's load report and progress bar would repeat what the real load prints."""
    verbosity = transformers_logging.get_verbosity()
    bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bar:
            transformers_logging.enable_progress_bar()


def _signature(folder: Path) -> tuple:
    """Size and modification time of the files the probe reads: a changed file is probed again."""
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
                 if p.is_file() and (p.suffix == ".safetensors" or p.name in LOADER_JSON_FILES))


def check_weights_fit(folder: Path, auto_class: type | None, field: str, name: str, new_head: bool = True) -> None:
    """Load the folder on the meta device (no tensor data is read) to see which weights would start random.

    The same loading report as the real ``from_pretrained``, renamed keys and prefixes included, but before the
    data is prepared and before anything is written to the run folder. ``new_head``: see ``check_loading_info``.
    """
    if auto_class is not None and (folder / "config.json").is_file():
        _probe(str(folder), auto_class, _signature(folder), field, name, new_head)


@lru_cache(maxsize=32)
def _probe(folder: str, auto_class: type, signature: tuple, field: str, name: str, new_head: bool) -> None:
    try:
        with _quiet_transformers():
            model, info = auto_class.from_pretrained(folder, device_map="meta", output_loading_info=True,
                                                             ignore_mismatched_sizes=True, use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as error:  # the real load reports these
        logger.debug("Weight probe of %s skipped: %s", folder, error)
        return
    check_loading_info(model, info, field, name, new_head)


def listing(keys: Iterable[str], first: int = 3) -> str:
    """``a, b, c and 4 more``: the first few names and how many there are in all."""
    keys = list(keys)
    shown = ", ".join(short(key, 100) for key in keys[:first])
    return shown + (f" and {len(keys) - first} more" if len(keys) > first else "")


def check_loading_info(model: nn.Module, info: dict[str, Any], field: str, name: str,
                       new_head: bool = True) -> None:
    """Only the new classification head may start from random weights.

    ``from_pretrained(..., ignore_mismatched_sizes=True)`` re-initialises every tensor whose shape differs from
    the config, and any tensor the checkpoint lacks, with a log line only; a backbone partly random would train
    without any error and transfer nothing. ``new_head=False`` (a teacher) allows no random tensor at all.
    """
    head = set(discover_layout(model).head) if new_head else set()
    mismatched = sorted((key, tuple(saved), tuple(wanted)) for key, saved, wanted in info.get("mismatched_keys", ())
                        if key not in head)
    missing = sorted(key for key in info.get("missing_keys", ()) if key not in head)
    if not mismatched and not missing:
        return
    problems = []
    if mismatched:
        shapes = [f"{key} {list(saved)} vs {list(wanted)}" for key, saved, wanted in mismatched]
        problems.append(f"{len(mismatched)} tensor(s) whose shape in the file differs from config.json "
                        f"({listing(shapes, 2)})")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing ({listing(missing)})")
    allowed = "only the new classification head may" if new_head else "no weight of a trained classifier may"
    raise ModelError(f"{where(field, name)}: the weights do not fit config.json: {' and '.join(problems)}; {allowed} "
                     "start from random weights. Use the config.json saved with these weights, or re-save the model "
                     "with save_pretrained.")
