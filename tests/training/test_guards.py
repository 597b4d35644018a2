"""Guards: a NaN loss stops the run naming the step; SIGTERM/SIGINT checkpoint and stop; writes stay inside."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_transfer import Recipe, finetune
from hf_transfer.errors import OutputError, TrainingError
from hf_transfer.training.guards import GracefulStop, NonFiniteLossGuard
from hf_transfer.training.outputs import RunFolder

REPO = Path(__file__).resolve().parents[2]


def text_recipe(model_dir: Path, data_dir: Path, out: Path, **training) -> dict:
    return {"task": "text-classification", "model": {"name_or_path": str(model_dir)},
            "data": {"path": str(data_dir), "max_length": 16},
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                         "logging_steps": 1, "disable_tqdm": True, "save_total_limit": None, **training},
            "output": {"dir": str(out)}}


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tiny_bert_dir, text_csv_data, tmp_path,
                                                                       monkeypatch):
    import hf_transfer.training.run as run

    original = run.build_trainer

    def poisoned(*args, **kwargs):
        build = original(*args, **kwargs)
        trainer = build.trainer

        def nan_from_step_3(module, inputs, output):
            if module.training and trainer.state.global_step >= 2:
                output.loss = output.loss * float("nan")
            return output

        trainer.model.register_forward_hook(nan_from_step_3)
        return build

    monkeypatch.setattr(run, "build_trainer", poisoned)
    out = tmp_path / "run"
    recipe = Recipe.from_dict(text_recipe(tiny_bert_dir, text_csv_data, out, eval_strategy="steps", eval_steps=1,
                                          save_strategy="steps", save_steps=1))
    with pytest.raises(TrainingError, match=r"loss became nan at step 3 .*checkpoint-2") as raised:
        finetune(recipe)
    assert "learning_rate" in str(raised.value)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert not (out / "checkpoints" / "checkpoint-3").exists()
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    weights = out / "checkpoints" / "checkpoint-2" / "model.safetensors"
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(weights).values() if t.dtype.is_floating_point)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_guard_rejects_every_non_finite_loss_and_passes_finite_ones(value):
    guard = NonFiniteLossGuard()
    guard.observe(torch.tensor(1.5))
    with pytest.raises(TrainingError, match="no checkpoint had been saved yet".capitalize()):
        guard.observe(torch.tensor([0.3, value]))


def test_sigint_sets_save_and_stop_then_restores_the_handler(tmp_path):
    stop = GracefulStop()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    state, control = TrainerState(), TrainerControl()
    before = signal.getsignal(signal.SIGINT)
    stop.on_train_begin(args, state, control)
    assert signal.getsignal(signal.SIGINT) != before
    assert not stop.on_step_end(args, state, control).should_save
    os.kill(os.getpid(), signal.SIGINT)  # handled: no KeyboardInterrupt
    assert stop.received == signal.SIGINT
    control = stop.on_step_end(args, state, TrainerControl())
    assert control.should_save and control.should_training_stop
    assert signal.getsignal(signal.SIGINT) == before  # a second Ctrl-C interrupts at once
    stop.on_train_end(args, state, control)
    assert signal.getsignal(signal.SIGINT) == before


SLOW_RUN = textwrap.dedent("""
    import sys, time
    from transformers import TrainerCallback
    import hf_transfer.training.run as run

    class Slow(TrainerCallback):  # gives the test time to send its signal mid-training
        def on_step_end(self, args, state, control, **kwargs):
            print(f"STEP {state.global_step}", flush=True)
            time.sleep(0.4)

    original = run.build_trainer

    def build(*args, **kwargs):
        made = original(*args, **kwargs)
        made.trainer.add_callback(Slow())
        return made

    run.build_trainer = build
    from hf_transfer.cli import main
    main(["finetune", sys.argv[1]])
""")


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tiny_bert_dir, text_csv_data, tmp_path, caplog):
    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert_dir, text_csv_data, out)  # 36 train rows, batch 4: 9 steps per epoch, 18 in all
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script), str(path)], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in process.stdout:
            if line.startswith("STEP 3"):
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and 3 <= checkpoints[-1] < 18, checkpoints
    assert not (out / "metrics.json").exists()

    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        result = finetune(Recipe.from_dict(recipe))
    assert f"checkpoint-{checkpoints[-1]}" in caplog.text and "Resuming from" in caplog.text
    assert result.metrics["train"]["steps"] == 18
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("name", ["../escaped.json", "/tmp/absolute.json", "sub/../../x.json", ".", "a/../.."])
def test_run_folder_refuses_names_outside_itself(tmp_path, name):
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(OutputError, match="not a file inside output.dir"):
        folder.write_json(name, {"x": 1})
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "x.json").exists()


def test_run_folder_writes_inside_itself_and_only_once_claimed(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(OutputError, match="writes only into folders it claimed"):
        folder.write_json("plots/a.json", {"x": 1})
    with folder.claimed("task: text-classification\n"):
        assert folder.write_json("plots/a.json", {"x": 1}) == tmp_path / "run" / "plots" / "a.json"


def test_recipe_name_cannot_move_the_default_output_dir():
    from hf_transfer.errors import RecipeError

    base = {"task": "text-classification", "model": {"name_or_path": "x/y"}, "data": {"path": "z"}}
    with pytest.raises(RecipeError, match="plain name"):
        Recipe.from_dict({**base, "name": "../../etc"})
    assert Path(Recipe.from_dict({**base, "name": "my run"}).output.dir) == Path("runs") / "my run"


def test_skip_mode_drops_the_non_finite_steps_counts_them_and_finishes(tiny_bert_dir, text_csv_data, tmp_path,
                                                                      monkeypatch):
    import hf_transfer.training.run as run

    original = run.build_trainer

    def poisoned(*args, **kwargs):
        build = original(*args, **kwargs)
        trainer = build.trainer

        def nan_at_steps_3_and_5(module, inputs, output):
            if module.training and trainer.state.global_step in (2, 4):
                output.loss = output.loss * float("nan")
            return output

        trainer.model.register_forward_hook(nan_at_steps_3_and_5)
        return build

    monkeypatch.setattr(run, "build_trainer", poisoned)
    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert_dir, text_csv_data, out)
    recipe["evaluation"] = {"on_nonfinite_loss": "skip"}
    result = finetune(Recipe.from_dict(recipe))
    assert result.metrics["train"]["skipped_nonfinite_steps"] == [3, 5]
    assert result.metrics["train"]["steps"] == 18
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(out / "model.safetensors").values()
               if t.dtype.is_floating_point)


def test_skip_mode_drops_gradients_only_of_bad_steps_and_stops_after_too_many_in_a_row():
    model = torch.nn.Linear(2, 1)
    guard = NonFiniteLossGuard(on_nonfinite="skip")
    state = TrainerState()
    guard.state = state
    for step in range(NonFiniteLossGuard.MAX_CONSECUTIVE_SKIPS + 1):
        model.weight.grad, model.bias.grad = torch.ones(1, 2), torch.ones(1)
        guard.on_pre_optimizer_step(None, state, TrainerControl(), model=model)
        assert model.weight.grad is not None  # finite step: untouched, and the run of skips starts again
        state.global_step += 1
        model.weight.grad = torch.tensor([[1.0, float("inf")]])
        if step < NonFiniteLossGuard.MAX_CONSECUTIVE_SKIPS - 1:
            guard.on_pre_optimizer_step(None, state, TrainerControl(), model=model)
            assert model.weight.grad is None and model.bias.grad is None
            state.global_step += 1
    assert len(guard.skipped_steps) == NonFiniteLossGuard.MAX_CONSECUTIVE_SKIPS - 1
    guard.observe(torch.tensor(float("nan")))  # skip mode: no error, the next optimizer step is dropped
    for _ in range(NonFiniteLossGuard.MAX_CONSECUTIVE_SKIPS - 1):
        model.weight.grad = torch.ones(1, 2)
        guard.on_pre_optimizer_step(None, state, TrainerControl(), model=model)
        guard.observe(torch.tensor(float("nan")))
    with pytest.raises(TrainingError, match="10 skipped steps in a row"):
        guard.on_pre_optimizer_step(None, state, TrainerControl(), model=model)


def test_on_nonfinite_loss_accepts_only_stop_or_skip(tiny_bert_dir, text_csv_data, tmp_path):
    from hf_transfer.errors import RecipeError

    recipe = text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "run")
    recipe["evaluation"] = {"on_nonfinite_loss": "ignore"}
    with pytest.raises(RecipeError, match="on_nonfinite_loss"):
        Recipe.from_dict(recipe)
