"""The output folder through the real CLI: a user's files survive every overwrite path and every failure, byte for
byte; a finished run is replaced only by a finished successor; places no run may write are refused up front."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from hf_transfer.training.outputs import LOCK_FILE, METRICS_FILE
from test_bad_inputs import Models, snapshot, text_recipe


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_timm_dir) -> Models:
    return Models(bert=tiny_bert_dir, timm=tiny_timm_dir)


def write_recipe(root: Path, recipe: dict) -> Path:
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def one_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def project(root: Path, models: Models) -> tuple[Path, dict]:
    """A user's project folder: data, notes and the recipe file itself."""
    root.mkdir(parents=True, exist_ok=True)
    recipe = text_recipe(root, models)
    (root / "notes").mkdir()
    (root / "notes" / "thesis.tex").write_text("precious")
    return root, recipe


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("where", ["dot", "absolute_project", "data_folder", "inside_data"])
def test_a_project_folder_is_never_an_output(where, overwrite, models, tmp_path, monkeypatch, capsys):
    root, recipe = project(tmp_path / "project", models)
    recipe["output"] = {"dir": {"dot": ".", "absolute_project": str(root), "data_folder": str(root / "data"),
                                "inside_data": str(root / "data" / "runs")}[where], "overwrite": overwrite}
    path = write_recipe(root, recipe)
    monkeypatch.chdir(root)
    before = snapshot(tmp_path)
    assert run_cli(["finetune", str(path)]) == EXIT_USER_ERROR
    one_error(capsys, "output.dir")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["/dev/null/out", "/proc/self/hf-transfer-out", "dangling_link", "",
                                   "file_on_the_way"])
def test_impossible_output_places_are_one_error(where, models, tmp_path, capsys):
    recipe = text_recipe(tmp_path, models)
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    (tmp_path / "a_file").write_text("x")
    recipe["output"] = {"dir": {"dangling_link": str(tmp_path / "link"),
                                "file_on_the_way": str(tmp_path / "a_file" / "out")}.get(where, where)}
    path = write_recipe(tmp_path, recipe)
    before = snapshot(tmp_path)
    assert run_cli(["finetune", str(path)]) == EXIT_USER_ERROR
    one_error(capsys, "output.dir")
    assert snapshot(tmp_path) == before


def test_tilde_in_output_dir_is_the_home_folder(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = text_recipe(tmp_path, models)
    recipe["output"] = {"dir": "~/runs/tilde"}
    monkeypatch.chdir(tmp_path)
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe))]) == 0, capsys.readouterr().err
    assert (tmp_path / "home" / "runs" / "tilde" / METRICS_FILE).is_file()
    assert not (tmp_path / "~").exists()


@pytest.fixture
def finished(models, tmp_path, capsys) -> tuple[Path, dict, dict[str, bytes]]:
    """A finished run in tmp_path/out, its recipe, and the run's bytes."""
    recipe = text_recipe(tmp_path, models)
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe))]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    return out, recipe, snapshot(out)


def test_overwrite_that_fails_in_training_keeps_the_old_run(finished, tmp_path, monkeypatch, capsys):
    out, recipe, before = finished
    recipe["output"]["overwrite"] = True

    def crash(self, *args, **kwargs):
        raise RuntimeError("a crash half-way through training")

    monkeypatch.setattr("hf_transfer.training.trainer.TransferTrainer.train", crash)
    with pytest.raises(RuntimeError):
        run_cli(["finetune", str(write_recipe(tmp_path, recipe))])
    assert snapshot(out) == before


@pytest.mark.parametrize("late", ["training.lr_scheduler_kwargs={bogus: 1}", "training.report_to=no_such_tracker"])
def test_overwrite_with_a_bad_late_value_keeps_the_old_run(late, finished, tmp_path, capsys):
    out, recipe, before = finished
    recipe["output"]["overwrite"] = True
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe)), "--set", late]) == EXIT_USER_ERROR
    one_error(capsys)
    assert snapshot(out) == before


def test_overwrite_replaces_a_finished_run_once_the_new_one_finished(finished, tmp_path, capsys):
    out, recipe, before = finished
    recipe["output"]["overwrite"] = True
    recipe["training"]["learning_rate"] = 1e-3
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe))]) == 0
    after = snapshot(out)
    assert after != before and set(after) == set(before)  # the same files, new contents
    assert "1.0e-03" in (out / "recipe.yaml").read_text() or "0.001" in (out / "recipe.yaml").read_text()


def test_foreign_file_in_a_finished_run_blocks_overwrite(finished, tmp_path, capsys):
    out, recipe, _ = finished
    (out / "my_notes.md").write_text("mine")
    before = snapshot(out)
    recipe["output"]["overwrite"] = True
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe))]) == EXIT_USER_ERROR
    one_error(capsys, "my_notes.md", "did not write")
    assert snapshot(out) == before


def test_a_second_run_into_a_busy_folder_is_refused(models, tmp_path, capsys):
    recipe = text_recipe(tmp_path, models)
    out = tmp_path / "out"
    out.mkdir()
    path = write_recipe(tmp_path, recipe)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # what a running hf-transfer leaves while it trains: its marker (via a real claim) and its live lock
        from hf_transfer.recipe import Recipe
        from hf_transfer.training.outputs import RunFolder

        with RunFolder(out).claimed(Recipe.from_yaml(path).to_yaml()):
            pass
        (out / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        before = snapshot(out)
        assert run_cli(["finetune", str(path)]) == EXIT_USER_ERROR
        one_error(capsys, "in use by another hf-transfer run", str(holder.pid))
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    assert run_cli(["finetune", str(path)]) == 0  # the holder is gone: its lock is stale
    assert (out / METRICS_FILE).is_file() and not (out / LOCK_FILE).exists()


def test_sigterm_during_an_overwrite_keeps_the_old_run_and_resumes(finished, tmp_path, capsys):
    """A pre-empted replacement: exit 143, the old run back in place, the same command resumes and finishes."""
    out, recipe, before = finished
    recipe["output"]["overwrite"] = True
    recipe["training"].update(num_train_epochs=2, save_strategy="steps", save_steps=1, eval_strategy="steps",
                              eval_steps=1, learning_rate=1e-3)
    path = write_recipe(tmp_path, recipe)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "HF_TRANSFER_TEST_SIGTERM_AT_STEP": "2"}
    script = ("import os, signal, sys\n"
              "from transformers import TrainerCallback\n"
              "from hf_transfer.training import trainer as t\n"
              "class Term(TrainerCallback):\n"
              "    def on_step_end(self, args, state, control, **kw):\n"
              "        if state.global_step == 2: os.kill(os.getpid(), signal.SIGTERM)\n"
              "init = t.TransferTrainer.__init__\n"
              "def patched(self, *a, **k):\n"
              "    init(self, *a, **k); self.add_callback(Term())\n"
              "t.TransferTrainer.__init__ = patched\n"
              "from hf_transfer.cli import main\n"
              "main(['finetune', sys.argv[1]])\n")
    process = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 143, process.stderr[-2000:]
    assert "Traceback" not in process.stderr
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(".next")} == before
    assert (out / ".next" / "checkpoints").is_dir()
    assert run_cli(["finetune", str(path)]) == 0
    assert not (out / ".next").exists() and not (out / ".previous").exists()
    assert json.loads((out / METRICS_FILE).read_text())["train"]["steps"] > 2


def test_a_later_stage_with_missing_data_stops_before_the_first_stage_trains(models, tmp_path, capsys):
    recipe = text_recipe(tmp_path, models)
    recipe["stages"] = [{"name": "a"}, {"name": "b", "data": {"path": str(tmp_path / "nowhere")}}]
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe))]) == EXIT_USER_ERROR
    one_error(capsys, "nowhere", "does not exist")
    assert not (tmp_path / "out").exists()


def test_writing_over_the_model_folder_the_run_reads_is_refused(finished, tmp_path, capsys):
    out, recipe, before = finished
    recipe["model"]["name_or_path"] = str(out)
    recipe["output"]["overwrite"] = True
    assert run_cli(["finetune", str(write_recipe(tmp_path, recipe))]) == EXIT_USER_ERROR
    one_error(capsys, "'model.name_or_path'", "which the run reads")
    assert snapshot(out) == before
