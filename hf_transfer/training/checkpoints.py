"""Checkpoints that are complete or ignored: a manifest marks a finished save; resume skips the rest.

``Trainer._save_checkpoint`` (transformers 5.23) writes ``checkpoint-N/`` in place, file after file (model,
optimizer, scheduler, scaler, RNG state, ``trainer_state.json``), then rotates old checkpoints. A kill in
between leaves a folder that ``get_last_checkpoint`` would happily pick, and resuming from it crashes or,
worse, silently restarts the LR schedule. Renaming a temporary folder would mean copying the Trainer's save
code, so instead :class:`CheckpointManifest` writes ``hf_transfer_checkpoint.json`` (size and sha256 of every
file) atomically once the save is done. A checkpoint without a manifest, or whose files no longer match
it, is partial or corrupt: :func:`last_complete_checkpoint` warns, removes it and falls back to the previous
complete one (or a fresh start).

Because the Trainer rotates before the manifest is written, ``training.save_total_limit: 1`` may leave no
complete checkpoint after a kill during a save; the run then starts over, it does not resume from garbage.

The checkpoints live in ``<output.dir>/checkpoints/checkpoint-N`` (the Trainer's ``output_dir`` is
``<output.dir>/checkpoints``): ``transformers.trainer_utils.get_last_checkpoint(f"{dir}/checkpoints")`` finds them,
``get_last_checkpoint(dir)`` does not, because the run folder itself holds only the finished model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..atomic import write_atomic

logger = logging.getLogger(__name__)

MANIFEST = "hf_transfer_checkpoint.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_TRAINING_STATE = ("optimizer.pt", "scheduler.pt")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """Where ``Trainer`` saves the checkpoint of ``step`` (``<output_dir>/checkpoint-<step>``)."""
    return Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))


def write_manifest(folder: Path, save_only_model: bool = False) -> Path:
    """Record every file of a just-saved checkpoint; written last and atomically, it marks it complete."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in _files(folder)}
    return write_atomic(folder / MANIFEST, json.dumps({"save_only_model": save_only_model, "files": files},
                                                      indent=1) + "\n")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (partial, truncated, corrupt), or None if it is complete."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = manifest["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST}, so its save never finished"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {MANIFEST} is unreadable ({error})"
    required = ["trainer_state.json"] if manifest.get("save_only_model") else ["trainer_state.json", *_TRAINING_STATE]
    missing = [name for name in required if name not in files]
    if not any(name in files for name in _WEIGHTS):
        missing.append("model.safetensors")
    if not manifest.get("save_only_model") and not any(re.match(r"rng_state(_\d+)?\.pth$", n) for n in files):
        missing.append("rng_state.pth")
    if missing:
        return f"it lacks {', '.join(missing)}"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected.get("size"):
            return f"{name} is truncated or changed ({path.stat().st_size} bytes, expected {expected.get('size')})"
        if _sha256(path) != expected.get("sha256"):
            return f"{name} is corrupt (sha256 differs from the one recorded when it was saved)"
    try:
        step = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"trainer_state.json is unreadable ({error})"
    if str(step) != _CHECKPOINT.match(folder.name).group(1):
        return f"trainer_state.json is for step {step}, not for this checkpoint"
    return None


def last_complete_checkpoint(checkpoints: Path, remove_bad: bool = False) -> str | None:
    """The newest complete checkpoint under ``checkpoints``; newer partial or corrupt ones are skipped.

    Each skipped one is named in a warning and, with ``remove_bad`` (the main process, before training),
    deleted: left in place it would count towards ``save_total_limit`` and be found again next time.
    """
    if not checkpoints.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in checkpoints.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    for _, folder in sorted(found, key=lambda item: item[0], reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        action = "removing it and falling back to the previous complete checkpoint" if remove_bad else "skipping it"
        logger.warning("Checkpoint %s is partial or corrupt: %s; %s.", folder, problem, action)
        if remove_bad:
            shutil.rmtree(folder)
    return None


class CheckpointManifest(TrainerCallback):
    """After each save, mark ``checkpoint-<step>`` complete (main process, once all processes saved)."""

    def on_save(self, args, state, control, **kwargs):
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()  # every process has written its rng_state_<rank>.pth
        if state.is_world_process_zero:
            folder = checkpoint_dir(args.output_dir, state.global_step)
            if folder.is_dir():
                write_manifest(folder, save_only_model=bool(args.save_only_model))
