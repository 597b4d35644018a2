"""The run folder: checkpoints while training, a finished Hugging Face model folder after.

A run counts as finished once ``metrics.json`` exists; it is written last, and every file is
written to a temporary name first and renamed, so a killed run never looks finished.

A folder is hf-transfer's only if it can prove it: ``.hf_transfer_run.json`` is written when a run claims a
new or empty folder and lists every top-level entry the run wrote. Nothing else is ever removed, and a folder
holding anything else is refused. ``output.overwrite`` replaces a *finished* run only once its successor has
finished: the old run is set aside in ``.previous`` while the new one trains and put back if the new one
fails or is interrupted (the unfinished successor then waits in ``.next`` and resumes with the same command).
Each step of that swap is a rename recorded in the marker, so a run killed mid-swap is repaired by the next
start. A pid-checked ``.hf_transfer.lock`` keeps two runs out of one folder at once.

What a finished run folder holds (the layout of the transformers example scripts): the model
(``config.json``, ``model.safetensors``, processor files), ``trainer_state.json`` and ``all_results.json``/
``train_results.json``/``eval_results.json``/``test_results.json``, hf-transfer's ``recipe.yaml``, ``metrics.json``,
plots and ``README.md``, and ``logs/`` when a run reports to TensorBoard (kept at the end, across resumes and with
the run when it is set aside). The Trainer's checkpoints live in ``checkpoints/checkpoint-N`` while training (and
after, with ``output.keep_checkpoints``): ``transformers.trainer_utils.get_last_checkpoint(f"{dir}/checkpoints")``
finds them, ``get_last_checkpoint(dir)`` does not, because the run folder itself holds only the finished model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..atomic import write_atomic
from ..errors import OutputError
from .checkpoints import MANIFEST, last_complete_checkpoint

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
OWNER_FILE = ".hf_transfer_run.json"
LOCK_FILE = ".hf_transfer.lock"
PREVIOUS = ".previous"
NEXT = ".next"
STAGING = ".staging"
CHECKPOINTS = "checkpoints"
#: Trackers' logs (TensorBoard event files): a run entry like the others, never removed when the run finishes.
LOGS = "logs"
#: Where transformers' ``TensorBoardCallback`` writes; read when the ``Trainer`` is built (transformers 5 has no
#: ``TrainingArguments.logging_dir``). ``RunFolder.claimed`` puts back the value it found when its block ends.
TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"
#: Hidden names only hf-transfer writes inside a folder it owns.
RESERVED = (OWNER_FILE, LOCK_FILE, PREVIOUS, NEXT, STAGING)
#: Where nothing is ever written, whatever output.dir says.
SYSTEM_ROOTS = ("/proc", "/sys", "/dev")


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


# ----------------------------------------------------------------------------- where a run may go
def check_location(path: Path, protected: Mapping[str, Path] | None = None,
                   sources: Mapping[str, Path] | None = None) -> None:
    """Refuse places no run should write to: system folders, ``/``, home, the working folder or one above it,
    a path under a file, a dangling link, the folders named in ``protected`` (data) or above or inside them, and
    the folders in ``sources`` (models the run reads) or inside them."""
    if not str(path).strip():
        raise OutputError("'output.dir' is empty: set it to a new folder, e.g. runs/my-run.")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"'output.dir' = '{path}' is a symbolic link to a missing target ({os.readlink(path)}); "
                          "point output.dir at a real folder.")
    resolved = path.resolve()
    for root in SYSTEM_ROOTS:
        if resolved.is_relative_to(root):
            raise OutputError(f"'output.dir' = '{path}' lies in {root}, a system folder; choose a folder of yours, "
                              "e.g. runs/my-run.")
    special = {"the file-system root": Path(resolved.anchor), "your home folder": Path.home().resolve()}
    for what, place in special.items():
        if place.is_relative_to(resolved):
            raise OutputError(f"'output.dir' = '{path}' is {what} or above it; hf-transfer needs a folder of its "
                              "own, e.g. runs/my-run.")
    if Path.cwd().resolve().is_relative_to(resolved):
        raise OutputError(f"'output.dir' = '{path}' is the current folder or above it; hf-transfer needs a folder "
                          "of its own, e.g. runs/my-run.")
    for field_name, place in (protected or {}).items():
        place = place.resolve()
        if place.is_relative_to(resolved) or resolved.is_relative_to(place):
            raise OutputError(f"'output.dir' = '{path}' overlaps '{field_name}' ({place}); runs and their inputs "
                              "must live in separate folders. Choose another output.dir.")
    for field_name, place in (sources or {}).items():
        place = place.resolve()
        if resolved.is_relative_to(place):
            raise OutputError(f"'output.dir' = '{path}' is or lies inside '{field_name}' ({place}), which the run "
                              "reads; write the new run to another folder.")
    ancestor = resolved
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"'output.dir' = '{path}' cannot be created: '{ancestor}' is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"'output.dir' = '{path}' cannot be created or written: no write permission in "
                          f"'{ancestor}'.")


# ----------------------------------------------------------------------------- the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(folder: Path) -> dict[str, Any] | None:
    """Who holds ``folder``'s lock, if a live process (or one on another host) does; None for a stale lock."""
    try:
        holder = json.loads((folder / LOCK_FILE).read_text(encoding="utf-8"))
        pid, host = int(holder["pid"]), str(holder["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a half-written lock: its writer died before finishing it
    if host == socket.gethostname() and not _pid_alive(pid):
        return None
    return {"pid": pid, "host": host}


_HELD: dict[Path, int] = {}
"""Locks this process holds, with how many nested claims use each (a protocol and its own final run)."""


def _acquire_lock(folder: Path) -> None:
    key = folder.resolve()
    if _HELD.get(key):
        _HELD[key] += 1
        return
    lock = folder / LOCK_FILE
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(folder)
            if holder is not None:
                raise OutputError(f"'{folder}' is in use by another hf-transfer run (pid {holder['pid']} on "
                                  f"{holder['host']}); wait for it to end or choose another output.dir.") from None
            logger.warning("Removing the stale lock %s (its process has ended)", lock)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(record)
        _HELD[key] = 1
        return
    raise OutputError(f"Could not lock '{folder}'; another run may be starting there. Try again.")


def _release_lock(folder: Path) -> None:
    key = folder.resolve()
    _HELD[key] = _HELD.get(key, 1) - 1
    if _HELD[key] <= 0:
        _HELD.pop(key, None)
        (folder / LOCK_FILE).unlink(missing_ok=True)


def holds_claim(folder: Path) -> bool:
    """Whether this process has claimed ``folder`` (holds its lock) right now."""
    return bool(_HELD.get(Path(folder).resolve()))


def claimed_logs_dir(checkpoints: Path) -> Path | None:
    """``<run>/logs`` when ``checkpoints`` is ``<run>/checkpoints`` of a run folder this process has claimed, else
    None (a pre-flight check, another process of the run, a folder that is not a run's)."""
    checkpoints = Path(checkpoints)
    if checkpoints.name != CHECKPOINTS or not holds_claim(checkpoints.parent):
        return None
    return checkpoints.parent / LOGS


# ----------------------------------------------------------------------------- ownership
@dataclass
class Owner:
    """The marker's content: what hf-transfer wrote at the top of the folder, and a swap in progress."""

    entries: list[str]
    replacing: str | None = None
    """``None``, or the swap phase: ``aside`` (moving the old run into .previous), ``training`` (done; the
    new run is at the top) or ``restoring`` (moving the new run into .next before the old one comes back)."""

    def to_json(self) -> str:
        return json.dumps({"created_by": "hf-transfer", "format": 1, "entries": sorted(set(self.entries)),
                           "replacing": self.replacing}, indent=1) + "\n"


def read_owner(folder: Path) -> Owner | None:
    """The marker of ``folder``, or None when hf-transfer cannot prove it made the folder."""
    try:
        data = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("created_by") != "hf-transfer" or not isinstance(data.get("entries"), list):
        return None
    return Owner(entries=[str(e) for e in data["entries"]], replacing=data.get("replacing"))


def _write_owner(folder: Path, owner: Owner) -> None:
    write_atomic(folder / OWNER_FILE, owner.to_json())


def record(folder: Path, *names: str, claim: bool = False) -> None:
    """Add top-level entries this run wrote (or is about to write) to ``folder``'s marker; ``claim`` starts the
    marker of a new or empty folder (checked with ``check_ours`` first)."""
    owner = read_owner(folder)
    if owner is None and claim:
        folder.mkdir(parents=True, exist_ok=True)
        owner = Owner(entries=[])
    elif owner is None:
        raise OutputError(f"'{folder}' has no {OWNER_FILE}; hf-transfer writes only into folders it claimed.")
    if set(names) - set(owner.entries):
        owner.entries = [*owner.entries, *names]
        _write_owner(folder, owner)


def check_ours(folder: Path, field: str, extra: Callable[[Owner], list[str]] | None = None) -> Owner | None:
    """``None`` for a new or empty folder, else the marker of a folder hf-transfer made that holds nothing else
    (``extra`` may name more entries to refuse); anything else is one OutputError naming ``field``."""
    if not (folder.is_dir() and any(folder.iterdir())):
        return None
    owner = read_owner(folder)
    if owner is None:
        legacy = " (a run of an hf-transfer older than this marker counts too: move or delete it yourself)" \
            if (folder / RECIPE_FILE).is_file() and (folder / METRICS_FILE).is_file() else ""
        raise OutputError(f"{field} = '{folder}' is not empty and was not made by hf-transfer (no {OWNER_FILE})"
                          f"{legacy}; nothing in it is touched. Choose an empty or new folder.")
    foreign = foreign_entries(folder, owner) or (extra(owner) if extra else [])
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"{field} = '{folder}' holds files hf-transfer did not write ({shown}); move them out or "
                          f"choose another {field.strip(chr(39))}. Nothing was changed.")
    return owner


def _is_temporary_of(name: str, entries: set[str]) -> bool:
    """``write_atomic``'s temporary files are ``.<name>.<8 random characters>``."""
    stem, _, suffix = name[1:].rpartition(".")
    return name.startswith(".") and len(suffix) == 8 and stem in entries


#: Folders that hold sub-runs (each with its own marker) and the starting weights of stages.
CONTAINERS = ("stages", "folds", "learning_curve", "modalities")
#: What ``checkpoints/`` may hold: the Trainer's checkpoint folders (also while it writes them) and the TensorBoard
#: logs (``runs``) that an older hf-transfer let the Trainer write there.
CHECKPOINT_CONTENT = re.compile(r"^(tmp-)?checkpoint-\d+$|^runs$")
#: Folders that are one sub-run each (their own marker): the baselines (from scratch, source only).
BASELINES = ("scratch", "source_only")
#: Top-level entries of a run that has not finished yet; clearing one removes nothing else.
UNFINISHED_ENTRIES = (RECIPE_FILE, CHECKPOINTS, LOGS, "stages.yaml", *BASELINES, "ranking.json", "ranking.md",
                      "ranking.png", "learning_curve.png", *CONTAINERS)


def foreign_entries(folder: Path, owner: Owner) -> list[str]:
    """Paths below ``folder`` (relative to it) that hf-transfer did not write: top-level names not on the marker's
    list, anything in ``checkpoints/`` but the Trainer's checkpoints, anything in ``.previous``/``.next`` that is not
    a run entry, and the same inside sub-runs (their own markers) and folders of sub-runs."""
    return sorted(_foreign(folder, set(owner.entries), ""))


def _foreign(folder: Path, entries: set[str], prefix: str) -> Iterator[str]:
    for path in folder.iterdir():
        name, where = path.name, prefix + path.name
        if name in (PREVIOUS, NEXT):  # the old run set aside, or an unfinished successor: run entries only
            yield from (_foreign(path, entries, where + "/") if path.is_dir() and not path.is_symlink() else [where])
        elif name in RESERVED or _is_temporary_of(name, entries | set(RESERVED)):
            continue
        elif name not in entries:
            yield where
        elif name == CHECKPOINTS and path.is_dir():
            yield from (f"{where}/{p.name}" for p in path.iterdir() if not CHECKPOINT_CONTENT.match(p.name))
        elif name in CONTAINERS and path.is_dir():
            yield from _foreign_in_container(path, where + "/")
        elif path.is_dir() and (owner := read_owner(path)) is not None:  # a sub-run such as scratch/
            yield from _foreign(path, set(owner.entries), where + "/")


def _foreign_in_container(folder: Path, prefix: str) -> Iterator[str]:
    """Inside ``stages/``, ``folds/``, ``learning_curve/``, ``modalities/``: sub-runs, folders of sub-runs, stages' starting weights."""
    for path in folder.iterdir():
        where = prefix + path.name
        if not path.is_dir() or path.is_symlink():
            yield where
        elif (owner := read_owner(path)) is not None:
            yield from _foreign(path, set(owner.entries), where + "/")
        elif not path.name.endswith("-initial-weights"):
            yield from _foreign_in_container(path, where + "/")


def _move_entries(source: Path, target: Path, names: list[str]) -> None:
    """Rename ``names`` from ``source`` into ``target``, ``metrics.json`` first so neither side looks finished
    while the move is under way (a half-moved run has metrics nowhere)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(names, key=lambda n: n != METRICS_FILE):
        if (source / name).exists() or (source / name).is_symlink():
            destination = target / name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(source / name, destination)


def _remove_entries(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class RunFolder:
    def __init__(self, path: str | os.PathLike, overwrite: bool = False,
                 protected: Mapping[str, Path] | None = None, sources: Mapping[str, Path] | None = None) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        self.overwrite = overwrite
        self.protected = dict(protected or {})
        self.sources = dict(sources or {})
        self._created = False
        self._existed = True
        self._locked = False
        self._remove_dir = False

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def logs(self) -> Path:
        """TensorBoard's event files (``training.report_to: tensorboard``); see ``training.arguments``."""
        return self.path / LOGS

    def owner(self) -> Owner | None:
        return read_owner(self.path)

    def is_finished(self) -> bool:
        return self.owner() is not None and (self.path / METRICS_FILE).is_file()

    def _is_empty(self) -> bool:
        return not (self.path.is_dir() and any(self.path.iterdir()))

    def check(self, recipe_yaml: str) -> None:
        """Raise OutputError unless this run may write here; changes nothing (a pre-flight check)."""
        check_location(self.path, self.protected, self.sources)
        for parent in self.path.resolve().parents:
            if read_owner(parent) is not None and not _HELD.get(parent):
                raise OutputError(f"'output.dir' = '{self.path}' lies inside the hf-transfer run '{parent}'; a run's "
                                  "folder is its own. Choose a folder outside it.")
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"'output.dir' = '{self.path}' is a file, not a folder.")
        owner = check_ours(self.path, "'output.dir'", lambda owner: self._not_cleared(owner, recipe_yaml))
        if owner is None:
            return
        holder = lock_holder(self.path)
        if holder is not None and not (holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()):
            raise OutputError(f"'{self.path}' is in use by another hf-transfer run (pid {holder['pid']} on "
                              f"{holder['host']}); wait for it to end or choose another output.dir.")
        if owner.replacing is not None:
            return  # an interrupted swap: the claim repairs it first, then decides
        if self.is_finished():
            if not self.overwrite:
                raise OutputError(f"'{self.path}' holds a finished run. Set output.overwrite=true to replace it "
                                  "(the old run stays until the new one has finished), or choose another output.dir.")
            return
        if self.checkpoints.is_symlink():
            raise OutputError(f"'{self.checkpoints}' is a symbolic link; hf-transfer writes only inside output.dir.")
        recipe_file = self.path / RECIPE_FILE
        changed = recipe_differences(recipe_file.read_text(encoding="utf-8"), recipe_yaml) if recipe_file.is_file() else []
        if changed and not self.overwrite:
            shown = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise OutputError(f"'{self.path}' holds an unfinished run of another recipe (it differs in {shown}); "
                              "resuming it would mix the two. Set output.overwrite=true to start over, "
                              "or choose another output.dir.")

    # ------------------------------------------------------------------------- claiming
    @contextmanager
    def claimed(self, recipe_yaml: str) -> Iterator[str | None]:
        """Own the folder for the ``with`` block; yields a complete checkpoint to resume from, if any.

        Nested claims of the same folder (a protocol, then its own final run) share the outer one. When the
        outermost block fails, a finished run that was set aside comes back, and a folder this claim created
        with nothing worth resuming is removed again.
        """
        nested = bool(_HELD.get(self.path.resolve()))
        self._locked = False
        tensorboard_dir = os.environ.get(TENSORBOARD_ENV)  # the run may point it at its logs/ (training.arguments)
        try:
            if nested:
                _acquire_lock(self.path)
                self._locked = True
            else:
                self._claim(recipe_yaml)
            yield self._resume_point(recipe_yaml)
        except BaseException:
            if self._locked and not nested:
                self._abandon()
            raise
        finally:
            if tensorboard_dir is None:
                os.environ.pop(TENSORBOARD_ENV, None)
            else:
                os.environ[TENSORBOARD_ENV] = tensorboard_dir
            if self._locked:
                _release_lock(self.path)
            if self._remove_dir:
                try:
                    self.path.rmdir()
                except OSError:
                    pass

    def _resume_point(self, recipe_yaml: str) -> str | None:
        if not (self.path / RECIPE_FILE).is_file():
            write_atomic(self.path / RECIPE_FILE, recipe_yaml)
        last = last_complete_checkpoint(self.checkpoints, remove_bad=True)
        if last:
            logger.info("Resuming from %s", last)
        return last

    def _claim(self, recipe_yaml: str) -> None:
        self.check(recipe_yaml)
        self._existed = self.path.exists()
        self._created = self._is_empty()
        self.path.mkdir(parents=True, exist_ok=True)
        _acquire_lock(self.path)
        self._locked = True
        owner = self.owner()
        if owner is None:
            owner = Owner(entries=[RECIPE_FILE, CHECKPOINTS])
            _write_owner(self.path, owner)
        if owner.replacing is not None:
            self._repair(owner)
            self.check(recipe_yaml)  # the repaired folder is judged like any other (e.g. finished, no overwrite)
        self._make_room(recipe_yaml)
        write_atomic(self.path / RECIPE_FILE, recipe_yaml)

    def _not_cleared(self, owner: Owner, recipe_yaml: str) -> list[str]:
        """Clearing an unfinished run of another recipe (overwrite) removes only what an unfinished run writes;
        anything else on its list stops it."""
        if self.is_finished() or not self.overwrite or owner.replacing is not None or \
                self._same_recipe(self.path / RECIPE_FILE, recipe_yaml):
            return []
        return [name for name in self._top_entries(owner) if name not in UNFINISHED_ENTRIES]

    def _top_entries(self, owner: Owner) -> list[str]:
        return [p.name for p in self.path.iterdir() if p.name not in RESERVED and p.name in owner.entries]

    def _repair(self, owner: Owner) -> None:
        """Finish a swap a killed run left half done, so that the old finished run is at the top again."""
        previous = self.path / PREVIOUS
        if owner.replacing == "training" and (self.path / METRICS_FILE).is_file():
            owner.replacing = None  # the new run had finished: only dropping the old one was left
            _write_owner(self.path, owner)
            self._drop_replaced()
            return
        if owner.replacing == "aside":  # only old entries moved so far: move them back
            _move_entries(previous, self.path, [p.name for p in previous.iterdir()] if previous.is_dir() else [])
        else:  # "training" or "restoring": the top holds the new, unfinished run
            self._put_back(owner)
        if previous.is_dir():
            shutil.rmtree(previous)
        owner.replacing = None
        _write_owner(self.path, owner)
        logger.warning("Repaired %s after an interrupted replacement: the previous finished run is back in place.",
                       self.path)

    def _put_back(self, owner: Owner) -> None:
        """The new run goes to ``.next`` (when it has anything to resume), the old one back to the top."""
        owner.replacing = "restoring"
        _write_owner(self.path, owner)
        shutil.rmtree(self.path / STAGING, ignore_errors=True)  # a half-written export of the new run
        new = self._top_entries(owner)
        following = self.path / NEXT
        if self._has_progress():
            _move_entries(self.path, following, new)
        else:
            _remove_entries(self.path, new)
        previous = self.path / PREVIOUS
        names = [p.name for p in previous.iterdir()] if previous.is_dir() else []
        _move_entries(previous, self.path, names)
        owner.entries = sorted(set(owner.entries) | set(names))

    def _make_room(self, recipe_yaml: str) -> None:
        """Set a finished run aside (overwrite), clear an unfinished one of another recipe (overwrite) or keep
        an unfinished one of the same recipe to resume."""
        owner = self.owner()
        assert owner is not None
        following = self.path / NEXT
        if self.is_finished():  # check() allowed this only with overwrite
            owner.replacing = "aside"
            _write_owner(self.path, owner)
            _move_entries(self.path, self.path / PREVIOUS, self._top_entries(owner))
            owner.replacing = "training"
            _write_owner(self.path, owner)
            logger.warning("output.overwrite=true: the finished run in %s is set aside in %s until this run has "
                           "finished", self.path, PREVIOUS)
            if following.is_dir() and self._same_recipe(following / RECIPE_FILE, recipe_yaml):
                logger.info("Resuming the unfinished replacement run kept in %s", following)
                names = [p.name for p in following.iterdir()]
                _move_entries(following, self.path, names)
                owner.entries = sorted(set(owner.entries) | set(names))
                _write_owner(self.path, owner)
            if following.exists():
                shutil.rmtree(following)
            return
        recipe_file = self.path / RECIPE_FILE
        if recipe_file.is_file() and not self._same_recipe(recipe_file, recipe_yaml):
            logger.warning("output.overwrite=true: removing the unfinished run of another recipe in %s", self.path)
            _remove_entries(self.path, self._top_entries(owner))
            if following.exists():
                shutil.rmtree(following)
        elif recipe_file.is_file() and self.overwrite:
            logger.info("output.overwrite=true replaces only finished runs; resuming the unfinished run in %s",
                        self.path)

    @staticmethod
    def _same_recipe(recipe_file: Path, recipe_yaml: str) -> bool:
        return recipe_file.is_file() and not recipe_differences(recipe_file.read_text(encoding="utf-8"), recipe_yaml)

    def _has_progress(self) -> bool:
        """Whether anything here is worth resuming: a complete checkpoint or a finished sub-run."""
        return any(path.name in (MANIFEST, METRICS_FILE) for path in self.path.rglob("*")
                   if not path.relative_to(self.path).parts[0] in (PREVIOUS, NEXT))

    def _abandon(self) -> None:
        """After a failure: bring a set-aside finished run back; undo a claim that left nothing to resume."""
        try:
            owner = self.owner()
            if owner is None:
                return
            if owner.replacing is not None:
                self._put_back(owner)
                if (self.path / PREVIOUS).is_dir():
                    shutil.rmtree(self.path / PREVIOUS)
                owner.replacing = None
                _write_owner(self.path, owner)
                where = f"; the unfinished new run waits in {NEXT} and resumes with the same command" \
                    if (self.path / NEXT).is_dir() else ""
                logger.warning("The run did not finish: the previous finished run in %s is back in place%s.",
                               self.path, where)
                return
            if self._created and not self._has_progress():
                _remove_entries(self.path, [*self._top_entries(owner), OWNER_FILE])
                self._remove_dir = not self._existed
        except OSError as error:  # never hide the original failure behind a clean-up problem
            logger.warning("Could not tidy %s after the failure: %s", self.path, error)

    # ------------------------------------------------------------------------- writing
    def file(self, name: str) -> Path:
        """``output.dir / name``, refusing names that would land outside the run folder."""
        target = self.path / name
        root = self.path.resolve()
        if Path(name).is_absolute() or not target.resolve().is_relative_to(root) or target.resolve() == root:
            raise OutputError(f"Refusing to write '{name}': it is not a file inside output.dir '{self.path}'.")
        return target

    def write_json(self, name: str, data: Any) -> Path:
        target = self.file(name)
        record(self.path, Path(name).parts[0])
        return write_atomic(target, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        target = self.file(name)
        record(self.path, Path(name).parts[0])
        return write_atomic(target, text)

    def staging(self) -> Path:
        """A fresh hidden folder inside the run folder; ``commit_staging`` moves its files in."""
        staging = self.path / STAGING
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        return staging

    def commit_staging(self) -> None:
        staging = self.path / STAGING
        names = [item.name for item in staging.iterdir()]
        record(self.path, *names)
        _move_entries(staging, self.path, names)
        staging.rmdir()

    def finish(self, metrics: dict[str, Any], keep_checkpoints: bool) -> None:
        """Write ``metrics.json`` (the run is finished from then on), then drop what it replaced and, unless
        ``keep_checkpoints``, the Trainer's checkpoints; ``logs/`` and every other run entry stay."""
        self.write_json(METRICS_FILE, metrics)
        owner = self.owner()
        if owner is not None and owner.replacing is not None:
            owner.replacing = None
            _write_owner(self.path, owner)
            self._drop_replaced()
            logger.info("The previous run in %s has been replaced", self.path)
        if not keep_checkpoints and self.checkpoints.is_dir():
            self._remove_checkpoints()

    def _remove_checkpoints(self) -> None:
        """The Trainer's checkpoints only; a file someone put into ``checkpoints/`` meanwhile stays, and TensorBoard
        logs an older hf-transfer let the Trainer write to ``checkpoints/runs`` move to ``logs/runs``."""
        for path in self.checkpoints.iterdir():
            if not CHECKPOINT_CONTENT.match(path.name) or not path.is_dir() or path.is_symlink():
                continue
            if path.name != "runs":
                shutil.rmtree(path)
            elif self._logs_ours() and not (self.logs / "runs").exists():
                record(self.path, LOGS)
                self.logs.mkdir(exist_ok=True)
                os.replace(path, self.logs / "runs")
                logger.info("Moved the TensorBoard logs in %s to %s", path, self.logs / "runs")
        if any(self.checkpoints.iterdir()):
            logger.warning("Kept %s: it holds files hf-transfer did not write (or logs it could not move).",
                           self.checkpoints)
        else:
            self.checkpoints.rmdir()

    def _logs_ours(self) -> bool:
        """``logs/`` is absent, or a real folder this run's marker lists."""
        if self.logs.is_symlink():
            return False
        owner = self.owner()
        return not self.logs.exists() or (self.logs.is_dir() and owner is not None and LOGS in owner.entries)

    def _drop_replaced(self) -> None:
        for name in (PREVIOUS, NEXT):
            shutil.rmtree(self.path / name, ignore_errors=True)
