"""SIGKILL a real ``scripts/finetune.py`` run early, mid-epoch and inside a checkpoint save; the same command
resumes and ends with exactly the metrics, losses and learning rates of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: Test-only hook, never part of hf-transfer: patches the Trainer in the child process, then runs the real
#: entry point. ``KILL_AT=step:N`` dies at the start of optimizer step N+1 (N steps done); ``save:N`` dies
#: inside the save of checkpoint-N, after the model, optimizer and scheduler files, before RNG and state.
KILL_HOOK = textwrap.dedent('''
    import os, runpy, signal, sys
    from transformers import Trainer

    where, _, step = os.environ.get("KILL_AT", "none:0").partition(":")

    def patch(name):
        original = getattr(Trainer, name)
        def killing(self, *args, **kwargs):
            if self.state.global_step == int(step):
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args, **kwargs)
        setattr(Trainer, name, killing)

    if where == "step":
        patch("training_step")
    elif where == "save":
        patch("_save_rng_state")
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
''')

#: 36 training rows (40 less the 10 % validation carve), batch 4: 9 steps an epoch, 18 in all; a checkpoint
#: every 4 steps and one at the end.
TRAINING = {"num_train_epochs": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "seed": 7,
            "logging_steps": 1, "eval_strategy": "epoch", "save_strategy": "steps", "save_steps": 4,
            "load_best_model_at_end": False, "save_total_limit": 2, "disable_tqdm": True}
TIMING = ("runtime", "per_second", "samples_per_s", "runtime_s", "total_flos")


def _run(recipe: Path, out: Path, hook: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("KILL_AT", None)
    if kill_at:
        env["KILL_AT"] = kill_at
    command = [sys.executable, str(hook), str(REPO / "scripts" / "finetune.py"), str(recipe),
               "--set", f"output.dir={out}"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _without_timing(node):
    if isinstance(node, dict):
        return {k: _without_timing(v) for k, v in node.items() if not any(t in k for t in TIMING)}
    if isinstance(node, list):
        return [_without_timing(v) for v in node]
    return node


def _history(out: Path) -> list[dict]:
    """The final checkpoint's log: every step's loss, grad norm and learning rate, and each evaluation."""
    state = json.loads((out / "checkpoints" / "checkpoint-18" / "trainer_state.json").read_text())
    assert state["global_step"] == 18
    return _without_timing(state["log_history"])


def test_sigkill_early_mid_epoch_and_during_a_save_then_rerun_matches_an_uninterrupted_run(
        tiny_bert_dir, text_csv_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "kill", "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 16}, "training": TRAINING,
        "output": {"keep_checkpoints": True}}))
    hook = tmp_path / "kill_hook.py"
    hook.write_text(KILL_HOOK)
    baseline, out = tmp_path / "baseline", tmp_path / "run"
    checkpoints = out / "checkpoints"
    result = _run(recipe, baseline, hook)
    assert result.returncode == 0, result.stderr[-3000:]

    # (kill point, checkpoint the attempt resumes from) -- each attempt is the same command
    for kill_at, resumes_from in [("step:2", None),           # early: before the first checkpoint
                                  ("step:6", None),           # mid-epoch 1, after checkpoint-4 was saved
                                  ("save:12", "checkpoint-4"),  # epoch 2, inside the save of checkpoint-12
                                  (None, "checkpoint-8")]:      # runs to the end
        result = _run(recipe, out, hook, kill_at)
        if resumes_from:
            assert f"Resuming from {checkpoints / resumes_from}" in result.stderr, result.stderr[-3000:]
        else:
            assert "Resuming from" not in result.stderr
        if kill_at:
            assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
            assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
        else:
            assert result.returncode == 0, result.stderr[-3000:]

        if kill_at == "step:2":
            assert not list(checkpoints.glob("checkpoint-*"))
        if kill_at == "save:12":  # model, optimizer and scheduler written; RNG state and trainer state not
            partial = checkpoints / "checkpoint-12"
            assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert f"Checkpoint {checkpoints / 'checkpoint-12'} is partial or corrupt" in result.stderr
    assert "falling back to the previous complete checkpoint" in result.stderr

    expected = json.loads((baseline / "metrics.json").read_text())
    actual = json.loads((out / "metrics.json").read_text())
    assert actual["train"]["steps"] == 18
    assert _without_timing(actual) == _without_timing(expected)
    assert _history(out) == _history(baseline)  # same per-step losses and learning rates: the schedule went on
