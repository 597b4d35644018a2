"""RunFolder: refusing to clobber, resuming from checkpoints, staging and finishing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_transfer.errors import OutputError
from hf_transfer.training.outputs import METRICS_FILE, RECIPE_FILE, RunFolder, write_atomic

RECIPE_YAML = "task: image-classification\n"


def finished_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / RECIPE_FILE).write_text("old recipe\n")
    (path / METRICS_FILE).write_text("{}\n")
    (path / "model.safetensors").write_bytes(b"old")
    return path


def test_prepare_new_folder_writes_recipe_and_returns_none(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "new")
    assert folder.prepare(RECIPE_YAML) is None
    assert (folder.path / RECIPE_FILE).read_text() == RECIPE_YAML
    assert folder.is_run_folder() and not folder.is_finished()


def test_prepare_existing_empty_folder_is_fine(tmp_path):
    assert RunFolder(tmp_path).prepare(RECIPE_YAML) is None
    assert (tmp_path / RECIPE_FILE).is_file()


def test_finished_run_is_refused_without_overwrite(tmp_path):
    path = finished_run(tmp_path / "run")
    with pytest.raises(OutputError, match="holds a finished run.*output.overwrite=true"):
        RunFolder(path).prepare(RECIPE_YAML)
    assert (path / "model.safetensors").read_bytes() == b"old"
    assert (path / RECIPE_FILE).read_text() == "old recipe\n"


def test_finished_run_is_replaced_with_overwrite(tmp_path):
    path = finished_run(tmp_path / "run")
    assert RunFolder(path, overwrite=True).prepare(RECIPE_YAML) is None
    assert sorted(p.name for p in path.iterdir()) == [RECIPE_FILE]
    assert (path / RECIPE_FILE).read_text() == RECIPE_YAML


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_non_empty_folder_is_refused_even_with_overwrite(tmp_path, overwrite):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not empty and holds no hf-transfer run"):
        RunFolder(tmp_path, overwrite=overwrite).prepare(RECIPE_YAML)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert not (tmp_path / RECIPE_FILE).exists()


def test_output_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        RunFolder(path).prepare(RECIPE_YAML)


def test_unfinished_run_resumes_from_last_complete_checkpoint(tmp_path):
    from test_checkpoints import fake_checkpoint

    folder = RunFolder(tmp_path / "run")
    for step in (5, 10):
        fake_checkpoint(folder.checkpoints, step)
    (folder.checkpoints / "checkpoint-15").mkdir()  # a save that never finished
    (folder.path / RECIPE_FILE).write_text("old recipe\n")
    last = folder.prepare(RECIPE_YAML)
    assert last is not None
    assert Path(last) == folder.checkpoints / "checkpoint-10"  # numeric, not lexicographic order
    assert not (folder.checkpoints / "checkpoint-15").exists()
    assert (folder.path / RECIPE_FILE).read_text() == RECIPE_YAML


def test_empty_checkpoints_folder_gives_none(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    (folder.path / RECIPE_FILE).write_text("r")
    assert folder.prepare(RECIPE_YAML) is None


def test_staging_and_commit_move_files_in(tmp_path):
    folder = RunFolder(tmp_path)
    folder.prepare(RECIPE_YAML)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "stale.png").write_text("stale")
    (tmp_path / "config.json").write_text("{\"old\": true}")
    staging = folder.staging()
    assert staging.is_dir() and not any(staging.iterdir())
    (staging / "config.json").write_text("{\"new\": true}")
    (staging / "model.safetensors").write_bytes(b"weights")
    (staging / "plots").mkdir()
    (staging / "plots" / "curve.png").write_text("png")
    folder.commit_staging()
    assert not staging.exists()
    assert json.loads((tmp_path / "config.json").read_text()) == {"new": True}
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["curve.png"]


def test_staging_starts_fresh(tmp_path):
    folder = RunFolder(tmp_path)
    (folder.staging() / "leftover").write_text("x")
    assert not any(folder.staging().iterdir())


@pytest.mark.parametrize("keep", [False, True])
def test_finish_writes_metrics_and_removes_checkpoints_unless_kept(tmp_path, keep):
    folder = RunFolder(tmp_path)
    folder.prepare(RECIPE_YAML)
    (folder.checkpoints / "checkpoint-3").mkdir(parents=True)
    folder.finish({"test": {"accuracy": 0.9}}, keep_checkpoints=keep)
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"test": {"accuracy": 0.9}}
    assert folder.is_finished()
    assert folder.checkpoints.is_dir() is keep


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = write_atomic(tmp_path / "sub" / "a.txt", "hello")
    write_atomic(target, "again")
    assert target.read_text() == "again"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]
