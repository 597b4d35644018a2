"""RunFolder: only our own folders, never a byte of anyone else's; replace a finished run only once its successor
has finished; resume; one run per folder at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_transfer.atomic import write_atomic
from hf_transfer.errors import OutputError
from hf_transfer.training import outputs
from hf_transfer.training.outputs import (LOCK_FILE, METRICS_FILE, NEXT, OWNER_FILE, PREVIOUS, RECIPE_FILE,
                                          RunFolder, check_location, read_owner)

RECIPE_YAML = "task: image-classification\n"
OTHER_YAML = "task: text-classification\n"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder below ``folder`` with its bytes (folders as b'dir')."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"dir"
            for p in sorted(folder.rglob("*"))} if folder.exists() else {}


def claim(folder: RunFolder, recipe_yaml: str = RECIPE_YAML) -> str | None:
    with folder.claimed(recipe_yaml) as resume_from:
        return resume_from


def finished_run(path: Path, weights: bytes = b"old") -> Path:
    """A finished run made by hf-transfer: claimed, staged outputs committed, metrics written."""
    folder = RunFolder(path)
    with folder.claimed(RECIPE_YAML):
        staging = folder.staging()
        (staging / "model.safetensors").write_bytes(weights)
        (staging / "config.json").write_text('{"old": true}')
        (staging / "plots").mkdir()
        (staging / "plots" / "a.png").write_bytes(b"png")
        folder.commit_staging()
        folder.finish({"test": {"accuracy": 0.5}}, keep_checkpoints=False)
    return path


def project_folder(path: Path) -> Path:
    """A user's project: their own recipe.yaml, data and notes (no hf-transfer marker)."""
    (path / "data").mkdir(parents=True)
    (path / "data" / "train.csv").write_text("text,label\ngood,1\n")
    (path / "notes").mkdir()
    (path / "notes" / "thesis.tex").write_text("precious")
    (path / RECIPE_FILE).write_text("task: text-classification\n")
    return path


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the process's own clean-up runs."""


# ----------------------------------------------------------------------------- claiming new folders
def test_claim_new_folder_writes_recipe_and_marker_and_returns_none(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "new")
    assert claim(folder) is None
    assert (folder.path / RECIPE_FILE).read_text() == RECIPE_YAML
    assert read_owner(folder.path) is not None and not folder.is_finished()
    assert not (folder.path / LOCK_FILE).exists()  # released at the end of the block


def test_existing_empty_folder_is_fine(tmp_path):
    assert claim(RunFolder(tmp_path)) is None
    assert (tmp_path / RECIPE_FILE).is_file()


def test_failure_before_anything_trained_leaves_no_trace(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        with RunFolder(out).claimed(RECIPE_YAML):
            raise ValueError("a bad learning-rate scheduler argument")
    assert not out.exists()
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(ValueError):
        with RunFolder(tmp_path / "empty").claimed(RECIPE_YAML):
            raise ValueError("boom")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_failure_after_a_checkpoint_keeps_the_run_to_resume(tmp_path):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "out")
    with pytest.raises(ValueError):
        with folder.claimed(RECIPE_YAML):
            fake_checkpoint(folder.checkpoints, 4)
            raise ValueError("loss became NaN")
    assert Path(claim(RunFolder(tmp_path / "out"))) == folder.checkpoints / "checkpoint-4"


# ----------------------------------------------------------------------------- foreign folders
@pytest.mark.parametrize("overwrite", [False, True])
def test_user_project_folder_is_refused_and_untouched(tmp_path, overwrite):
    path = project_folder(tmp_path / "project")
    before = snapshot(path)
    with pytest.raises(OutputError, match="not made by hf-transfer"):
        claim(RunFolder(path, overwrite=overwrite))
    assert snapshot(path) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_files_in_our_finished_run_are_refused_and_untouched(tmp_path, overwrite):
    path = finished_run(tmp_path / "run")
    (path / "my_notes.txt").write_text("mine")
    before = snapshot(path)
    with pytest.raises(OutputError, match="did not write.*my_notes.txt"):
        claim(RunFolder(path, overwrite=overwrite))
    assert snapshot(path) == before


def test_a_run_without_the_marker_is_refused_with_a_hint_and_untouched(tmp_path):
    path = tmp_path / "old_run"  # what an hf-transfer from before the marker left: indistinguishable from a user's
    path.mkdir()
    (path / RECIPE_FILE).write_text("task: text-classification\n")
    (path / METRICS_FILE).write_text("{}")
    before = snapshot(path)
    with pytest.raises(OutputError, match="move or delete it yourself"):
        claim(RunFolder(path, overwrite=True))
    assert snapshot(path) == before


def test_a_forged_or_broken_marker_does_not_make_a_folder_ours(tmp_path):
    path = project_folder(tmp_path / "project")
    (path / OWNER_FILE).write_text('{"entries": ["data", "notes"]}')  # not written by hf-transfer
    before = snapshot(path)
    with pytest.raises(OutputError, match="not made by hf-transfer"):
        claim(RunFolder(path, overwrite=True))
    assert snapshot(path) == before


# ----------------------------------------------------------------------------- places no run may write
@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd", "home", "root", "proc", "dev_null_child", "dangling_link",
                                   "data_folder", "inside_data", "above_data", "empty"])
def test_places_no_run_may_write_are_refused(where, tmp_path, monkeypatch):
    project = project_folder(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    paths = {"cwd": Path("."), "parent_of_cwd": Path(".."), "home": Path("~").expanduser(), "root": Path("/"),
             "proc": Path("/proc/self/out"), "dev_null_child": Path("/dev/null/out"), "dangling_link": tmp_path / "link",
             "data_folder": project / "data", "inside_data": project / "data" / "runs", "above_data": project,
             "empty": Path("")}
    before = snapshot(tmp_path)
    with pytest.raises(OutputError):
        check_location(paths[where], {"data.path": project / "data"})
    assert snapshot(tmp_path) == before


def test_a_path_under_a_file_names_the_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_location(tmp_path / "file" / "out")


def test_output_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        claim(RunFolder(path))
    assert path.read_text() == "x"


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert RunFolder("~/runs/a").path == tmp_path / "runs" / "a"


# ----------------------------------------------------------------------------- replacing a finished run
def test_finished_run_is_refused_without_overwrite(tmp_path):
    path = finished_run(tmp_path / "run")
    before = snapshot(path)
    with pytest.raises(OutputError, match="holds a finished run.*output.overwrite=true"):
        claim(RunFolder(path))
    assert snapshot(path) == before


def test_overwrite_replaces_the_finished_run_only_when_the_new_one_finishes(tmp_path):
    path = finished_run(tmp_path / "run")
    folder = RunFolder(path, overwrite=True)
    with folder.claimed(RECIPE_YAML):
        assert not folder.is_finished() and (path / PREVIOUS / "model.safetensors").read_bytes() == b"old"
        staging = folder.staging()
        (staging / "model.safetensors").write_bytes(b"new")
        folder.commit_staging()
        folder.finish({"test": {"accuracy": 0.9}}, keep_checkpoints=False)
    assert (path / "model.safetensors").read_bytes() == b"new"
    assert json.loads((path / METRICS_FILE).read_text()) == {"test": {"accuracy": 0.9}}
    assert not (path / PREVIOUS).exists() and not (path / "plots").exists()  # the old run's files are gone
    assert read_owner(path).replacing is None


@pytest.mark.parametrize("error", [ValueError("bad scheduler kwargs"), KeyboardInterrupt()])
def test_a_failed_replacement_puts_the_old_run_back_byte_for_byte(tmp_path, error):
    path = finished_run(tmp_path / "run")
    before = snapshot(path)
    with pytest.raises(type(error)):
        with RunFolder(path, overwrite=True).claimed(RECIPE_YAML):
            raise error
    assert snapshot(path) == before


def test_an_interrupted_replacement_waits_in_next_and_resumes_with_the_same_command(tmp_path):
    from test_checkpoints import fake_checkpoint

    path = finished_run(tmp_path / "run")
    before = snapshot(path)
    folder = RunFolder(path, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        with folder.claimed(RECIPE_YAML):
            fake_checkpoint(folder.checkpoints, 6)
            raise KeyboardInterrupt
    assert {k: v for k, v in snapshot(path).items() if not k.startswith(NEXT)} == before
    assert (path / NEXT / "checkpoints" / "checkpoint-6").is_dir()
    with pytest.raises(OutputError, match="finished run"):  # without overwrite the old run stays
        claim(RunFolder(path))
    resumed = claim(RunFolder(path, overwrite=True))
    assert resumed is not None and Path(resumed) == path / "checkpoints" / "checkpoint-6"


def test_every_kill_point_of_a_replacement_keeps_or_completes_the_old_run(tmp_path, monkeypatch):
    """Kill (no clean-up at all) at each rename and marker write of a replacement; the next start repairs it:
    afterwards the folder holds the old run byte for byte, or the new one complete."""
    real_replace = os.replace
    calls = {"n": 0, "kill_at": -1}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise Killed
        return real_replace(src, dst)

    def replacement(path: Path) -> None:
        folder = RunFolder(path, overwrite=True)
        with folder.claimed(RECIPE_YAML):
            staging = folder.staging()
            (staging / "model.safetensors").write_bytes(b"new")
            folder.commit_staging()
            folder.finish({"new": True}, keep_checkpoints=False)

    old = snapshot(finished_run(tmp_path / "probe"))
    monkeypatch.setattr(outputs.os, "replace", replace)
    monkeypatch.setattr("hf_transfer.atomic.os.replace", replace)
    replacement(tmp_path / "probe")
    total = calls["n"]
    assert total > 5
    monkeypatch.setattr(RunFolder, "_abandon", lambda self: None)  # killed: no clean-up runs
    for kill_at in range(1, total + 1):
        path = finished_run(tmp_path / f"run{kill_at}")
        calls.update(n=0, kill_at=kill_at)
        with pytest.raises(Killed):
            replacement(path)
        outputs._HELD.clear()
        (path / LOCK_FILE).unlink(missing_ok=True)  # the killed process is gone; its lock is stale
        calls.update(kill_at=-1)
        try:
            claim(RunFolder(path))  # the next start, without overwrite
        except OutputError as error:
            assert "finished run" in str(error)
        state = {k: v for k, v in snapshot(path).items() if not k.startswith(NEXT)}
        if (path / "model.safetensors").read_bytes() == b"new":
            assert json.loads((path / METRICS_FILE).read_text()) == {"new": True}, kill_at
        else:
            assert state == {k.replace("probe", f"run{kill_at}"): v for k, v in old.items()}, kill_at


# ----------------------------------------------------------------------------- unfinished runs
def test_unfinished_run_resumes_from_last_complete_checkpoint(tmp_path):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "run")
    claim(folder)
    for step in (5, 10):
        fake_checkpoint(folder.checkpoints, step)
    (folder.checkpoints / "checkpoint-15").mkdir()  # a save that never finished
    last = claim(RunFolder(tmp_path / "run"))
    assert last is not None
    assert Path(last) == folder.checkpoints / "checkpoint-10"  # numeric, not lexicographic order
    assert not (folder.checkpoints / "checkpoint-15").exists()


def test_overwrite_resumes_an_unfinished_run_of_the_same_recipe(tmp_path, caplog):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "run")
    claim(folder)
    fake_checkpoint(folder.checkpoints, 3)
    with caplog.at_level("INFO"):
        last = claim(RunFolder(tmp_path / "run", overwrite=True))
    assert Path(last) == folder.checkpoints / "checkpoint-3"
    assert "replaces only finished runs" in caplog.text


def test_overwrite_clears_an_unfinished_run_of_another_recipe_but_only_our_files(tmp_path):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "run")
    claim(folder, OTHER_YAML)
    fake_checkpoint(folder.checkpoints, 3)
    with pytest.raises(OutputError, match="unfinished run of another recipe"):
        claim(RunFolder(tmp_path / "run"))
    assert claim(RunFolder(tmp_path / "run", overwrite=True)) is None
    assert not folder.checkpoints.exists() and (folder.path / RECIPE_FILE).read_text() == RECIPE_YAML


# ----------------------------------------------------------------------------- one run at a time
def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path):
    path = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim(RunFolder(path))
        import socket

        (path / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(OutputError, match=f"in use by another hf-transfer run \\(pid {sleeper.pid}"):
            claim(RunFolder(path))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim(RunFolder(path)) is None  # the holder died: its lock is stale and taken over
    assert not (path / LOCK_FILE).exists()


def test_nested_claims_share_the_lock(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.claimed(RECIPE_YAML):
        assert (folder.path / LOCK_FILE).is_file()
        with RunFolder(tmp_path / "run").claimed(RECIPE_YAML):
            pass
        assert (folder.path / LOCK_FILE).is_file()
    assert not (folder.path / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- writing
def test_staging_and_commit_move_files_in_and_record_them(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.claimed(RECIPE_YAML):
        staging = folder.staging()
        assert staging.is_dir() and not any(staging.iterdir())
        (staging / "config.json").write_text("{\"new\": true}")
        (staging / "plots").mkdir()
        (staging / "plots" / "curve.png").write_text("png")
        folder.commit_staging()
    assert not staging.exists()
    assert json.loads((tmp_path / "config.json").read_text()) == {"new": True}
    assert {"config.json", "plots"} <= set(read_owner(tmp_path).entries)


@pytest.mark.parametrize("keep", [False, True])
def test_finish_writes_metrics_and_removes_checkpoints_unless_kept(tmp_path, keep):
    folder = RunFolder(tmp_path)
    with folder.claimed(RECIPE_YAML):
        (folder.checkpoints / "checkpoint-3").mkdir(parents=True)
        folder.finish({"test": {"accuracy": 0.9}}, keep_checkpoints=keep)
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"test": {"accuracy": 0.9}}
    assert folder.is_finished()
    assert folder.checkpoints.is_dir() is keep


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = write_atomic(tmp_path / "sub" / "a.txt", "hello")
    write_atomic(target, "again")
    assert target.read_text() == "again"
    (tmp_path / "sub" / "folder").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "sub" / "folder", "cannot replace a folder")
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt", "folder"]


# ----------------------------------------------------------------------------- files inside our own folders
@pytest.mark.parametrize("where", ["checkpoints/my_notes.txt", ".next/my_notes.txt", ".previous/my_notes.txt",
                                   "checkpoints/checkpoint-3/../extra/x.txt"])
def test_a_file_put_inside_our_folders_blocks_overwrite_and_survives(tmp_path, where):
    path = finished_run(tmp_path / "run")
    target = (path / where).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("mine")
    before = snapshot(path)
    with pytest.raises(OutputError, match="did not write"):
        claim(RunFolder(path, overwrite=True))
    assert snapshot(path) == before


def test_finish_keeps_a_file_added_to_checkpoints_while_training(tmp_path):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "run")
    with folder.claimed(RECIPE_YAML):
        fake_checkpoint(folder.checkpoints, 2)
        (folder.checkpoints / "notes.txt").write_text("mine")
        folder.finish({"ok": True}, keep_checkpoints=False)
    assert (folder.checkpoints / "notes.txt").read_text() == "mine"
    assert not (folder.checkpoints / "checkpoint-2").exists()


def test_a_run_inside_another_run_is_refused(tmp_path):
    path = finished_run(tmp_path / "run")
    with pytest.raises(OutputError, match="lies inside the hf-transfer run"):
        claim(RunFolder(path / "checkpoints"))
    assert not (path / "checkpoints").exists()


def test_a_forged_marker_listing_user_files_does_not_let_overwrite_clear_them(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    (path / "thesis.tex").write_text("precious")
    (path / RECIPE_FILE).write_text(OTHER_YAML)
    (path / OWNER_FILE).write_text(json.dumps({"created_by": "hf-transfer", "format": 1,
                                               "entries": ["thesis.tex", RECIPE_FILE], "replacing": None}))
    before = snapshot(path)
    with pytest.raises(OutputError, match="thesis.tex"):
        claim(RunFolder(path, overwrite=True))
    assert snapshot(path) == before


def test_output_inside_or_equal_to_the_model_folder_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for out in (model, model / "runs"):
        with pytest.raises(OutputError, match="'model.name_or_path'"):
            check_location(out, sources={"model.name_or_path": model})
    check_location(tmp_path / "out", sources={"model.name_or_path": tmp_path / "out" / "stages" / "a-initial-weights"})


# ----------------------------------------------------------------------------- tracker logs (logs/)
def write_logs(folder: RunFolder, text: str) -> None:
    """What TensorBoard does in a claimed run with report_to: tensorboard (training.arguments records logs/)."""
    outputs.record(folder.path, outputs.LOGS)
    folder.logs.mkdir(exist_ok=True)
    (folder.logs / f"events.out.tfevents.{text}").write_text(text)


def finished_run_with_logs(path: Path, text: str = "old") -> Path:
    folder = RunFolder(path)
    with folder.claimed(RECIPE_YAML):
        write_logs(folder, text)
        (folder.checkpoints / "checkpoint-3").mkdir(parents=True)
        staging = folder.staging()
        (staging / "model.safetensors").write_bytes(text.encode())
        folder.commit_staging()
        folder.finish({"run": text}, keep_checkpoints=False)
    return path


def test_finish_removes_the_checkpoints_but_keeps_the_logs(tmp_path):
    path = finished_run_with_logs(tmp_path / "run")
    assert not (path / "checkpoints").exists()
    assert (path / "logs" / "events.out.tfevents.old").read_text() == "old"
    assert "logs" in read_owner(path).entries
    before = snapshot(path)
    with pytest.raises(OutputError, match="finished run"):  # logs/ is ours: the only complaint is the finished run
        claim(RunFolder(path))
    assert snapshot(path) == before


def test_logs_are_kept_across_a_resume(tmp_path):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        with folder.claimed(RECIPE_YAML):
            write_logs(folder, "first")
            fake_checkpoint(folder.checkpoints, 4)
            raise KeyboardInterrupt
    resumed = RunFolder(tmp_path / "run")
    with resumed.claimed(RECIPE_YAML) as last:
        assert Path(last) == folder.checkpoints / "checkpoint-4"
        assert (folder.logs / "events.out.tfevents.first").read_text() == "first"
        write_logs(resumed, "second")
        resumed.finish({"ok": True}, keep_checkpoints=False)
    assert sorted(p.name for p in folder.logs.iterdir()) == ["events.out.tfevents.first", "events.out.tfevents.second"]


def test_overwrite_sets_the_logs_aside_and_puts_them_back_if_the_new_run_fails(tmp_path):
    path = finished_run_with_logs(tmp_path / "run")
    before = snapshot(path)
    folder = RunFolder(path, overwrite=True)
    with pytest.raises(ValueError):
        with folder.claimed(RECIPE_YAML):
            assert (path / PREVIOUS / "logs" / "events.out.tfevents.old").is_file() and not folder.logs.exists()
            write_logs(folder, "new")
            raise ValueError("the new run failed before its first checkpoint")
    assert snapshot(path) == before


def test_a_finished_replacement_brings_its_own_logs(tmp_path):
    path = finished_run_with_logs(tmp_path / "run")
    folder = RunFolder(path, overwrite=True)
    with folder.claimed(RECIPE_YAML):
        write_logs(folder, "new")
        folder.finish({"run": "new"}, keep_checkpoints=False)
    assert [p.name for p in folder.logs.iterdir()] == ["events.out.tfevents.new"]
    assert not (path / PREVIOUS).exists()


def test_tensorboard_logs_an_older_version_wrote_into_checkpoints_move_to_logs(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.claimed(RECIPE_YAML):
        (folder.checkpoints / "checkpoint-2").mkdir(parents=True)
        (folder.checkpoints / "runs" / "May01_host").mkdir(parents=True)
        (folder.checkpoints / "runs" / "May01_host" / "events.out.tfevents.1").write_text("old logs")
        folder.finish({"ok": True}, keep_checkpoints=False)
    assert not folder.checkpoints.exists()
    assert (folder.logs / "runs" / "May01_host" / "events.out.tfevents.1").read_text() == "old logs"
    assert "logs" in read_owner(folder.path).entries


def test_a_logs_folder_the_run_did_not_write_is_foreign(tmp_path):
    path = finished_run(tmp_path / "run")  # no TensorBoard: logs/ is not on the marker
    (path / "logs").mkdir()
    (path / "logs" / "mine.txt").write_text("mine")
    before = snapshot(path)
    with pytest.raises(OutputError, match="did not write.*logs"):
        claim(RunFolder(path, overwrite=True))
    assert snapshot(path) == before


def test_the_methods_own_data_folders_are_protected_too(tmp_path):
    from hf_transfer import Recipe
    from hf_transfer.training.run import protected_paths, run_folder

    data, unlabelled, target = (tmp_path / name for name in ("data", "unlabelled", "target"))
    for folder in (data, unlabelled, target):
        folder.mkdir()
    distil = Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": "some/model"},
                               "data": {"path": str(data)},
                               "method": {"name": "distillation", "teacher": "some/teacher",
                                          "unlabelled": {"path": str(unlabelled)}},
                               "output": {"dir": str(unlabelled / "run")}})
    assert protected_paths(distil) == {"data.path": data, "method.unlabelled.path": unlabelled}
    with pytest.raises(OutputError, match="overlaps 'method.unlabelled.path'"):
        run_folder(distil).check(distil.to_yaml())
    dann = distil.replace({"method": {"name": "dann", "target": {"path": str(target)}}})
    assert protected_paths(dann) == {"data.path": data, "method.target.path": target}
