"""The run folder: checkpoints while training, a finished Hugging Face model folder after.

A run counts as finished once ``metrics.json`` exists; it is written last, and every file is
written to a temporary name first and renamed, so a killed run never looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import OutputError

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as handle:
        handle.write(text)
        temporary = Path(handle.name)
    os.replace(temporary, path)
    return path


#: Recipe sections that decide what a checkpoint means. The others may change on resume: e.g. a lower
#: ``training.learning_rate`` after the loss became NaN, or more epochs.
RESUME_SECTIONS = ("task", "model", "data", "strategy")


def recipe_differences(old_yaml: str, new_yaml: str) -> list[str]:
    """Dotted fields of ``RESUME_SECTIONS`` whose values differ between two resolved recipes."""
    import yaml

    def flat(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): node}

    try:
        old, new = yaml.safe_load(old_yaml), yaml.safe_load(new_yaml)
    except yaml.YAMLError:
        return []
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []  # nothing to compare against (hand-written or foreign file)
    a = flat({k: old.get(k) for k in RESUME_SECTIONS}, "")
    b = flat({k: new.get(k) for k in RESUME_SECTIONS}, "")
    # fields set in both first: they are the ones a user changed, not defaults added since
    return sorted((key for key in a.keys() | b.keys() if a.get(key) != b.get(key)), key=lambda k: (k not in a, k))


class RunFolder:
    def __init__(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_finished(self) -> bool:
        return (self.path / METRICS_FILE).is_file()

    def is_run_folder(self) -> bool:
        return (self.path / RECIPE_FILE).is_file()

    def check(self, recipe_yaml: str) -> None:
        """Raise OutputError unless this run may write here; changes nothing (a pre-flight check)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"'output.dir' = '{self.path}' is a file, not a folder.")
        if not (self.path.is_dir() and any(self.path.iterdir())):
            return
        if not self.is_run_folder():
            raise OutputError(f"'output.dir' = '{self.path}' is not empty and holds no hf-transfer run "
                              "(no recipe.yaml). Choose an empty or new folder.")
        if self.overwrite:
            return
        if self.is_finished():
            raise OutputError(f"'{self.path}' holds a finished run. Set output.overwrite=true to replace it, "
                              "or choose another output.dir.")
        changed = recipe_differences((self.path / RECIPE_FILE).read_text(encoding="utf-8"), recipe_yaml)
        if changed:
            shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise OutputError(f"'{self.path}' holds an unfinished run of another recipe (it differs in {shown}); "
                              "resuming it would mix the two. Set output.overwrite=true to start over, "
                              "or choose another output.dir.")
        if self.checkpoints.is_symlink():
            raise OutputError(f"'{self.checkpoints}' is a symbolic link; hf-transfer writes only inside output.dir.")

    def prepare(self, recipe_yaml: str) -> str | None:
        """Check the folder may be used, write the resolved recipe, return a complete checkpoint to resume from."""
        from .checkpoints import last_complete_checkpoint

        self.check(recipe_yaml)
        if self.path.is_dir() and any(self.path.iterdir()):
            if self.overwrite:
                logger.warning("output.overwrite=true: removing the previous run in %s", self.path)
                shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / RECIPE_FILE, recipe_yaml)
        last = last_complete_checkpoint(self.checkpoints, remove_bad=True)
        if last:
            logger.info("Resuming from %s", last)
        return last

    def file(self, name: str) -> Path:
        """``output.dir / name``, refusing names that would land outside the run folder."""
        target = self.path / name
        root = self.path.resolve()
        if Path(name).is_absolute() or not target.resolve().is_relative_to(root) or target.resolve() == root:
            raise OutputError(f"Refusing to write '{name}': it is not a file inside output.dir '{self.path}'.")
        return target

    def write_text(self, name: str, text: str) -> Path:
        return write_atomic(self.file(name), text)

    def write_json(self, name: str, data: Any) -> Path:
        return write_atomic(self.file(name), json.dumps(data, indent=2, sort_keys=False) + "\n")

    def staging(self) -> Path:
        """A fresh hidden folder inside the run folder; ``commit_staging`` moves its files in."""
        staging = self.path / ".staging"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        return staging

    def commit_staging(self) -> None:
        staging = self.path / ".staging"
        for item in sorted(staging.iterdir()):
            target = self.path / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        staging.rmdir()

    def finish(self, metrics: dict[str, Any], keep_checkpoints: bool) -> None:
        self.write_json(METRICS_FILE, metrics)
        if not keep_checkpoints and self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)
