"""``training`` values that pass the recipe schema but used to fail inside ``Trainer``, signals and the last batch.

Each bad value must stop in pre-flight (``hf-transfer check`` and ``finetune``) with one ``error:`` line naming
``training.<field>``, exit code 2 and the output folder untouched, as in ``test_bad_inputs.py``.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

from conftest import write_colour_images
from test_bad_inputs import Case, Models, run_case, text_data, text_recipe, with_training
from hf_transfer.cli import EXIT_INTERRUPTED, run_cli

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the case is about training without a GPU")


def missing_tracker() -> str:
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return sorted(set(INTEGRATION_TO_CALLBACK) - set(get_available_reporting_integrations()))[0]


def with_small_validation(**values):
    def build(root: Path, models: Models) -> dict:
        recipe = text_recipe(root, models)  # 20 train rows: 2 carved off for validation, fewer than a batch
        recipe["training"].update(values)
        return recipe
    return build


CASES = [
    Case("unknown_best_metric", with_training(metric_for_best_model="acuracy"),
         ("'training.metric_for_best_model'", "'acuracy'", "Did you mean 'accuracy'", "eval_")),
    Case("unknown_scheduler_kwarg", with_training(lr_scheduler_kwargs={"num_cycle": 2}),
         ("'training.lr_scheduler_kwargs'", "num_cycle", "cosine")),
    Case("scheduler_kwargs_not_a_mapping", with_training(lr_scheduler_kwargs="cycles"),
         ("'training.lr_scheduler_kwargs'", "mapping")),
    Case("unknown_optim_arg", with_training(optim="sgd", optim_args="momentom=0.9"),
         ("'training.optim_args'", "'momentom'", "no effect", "sgd")),
    Case("optim_arg_adamw_ignores", with_training(optim_args="foo=1"), ("'training.optim_args'", "'foo'", "no effect")),
    Case("bad_optim_arg_value", with_training(optim="sgd", optim_args="momentum=high"),
         ("'training.optim_args'", "momentum=high", "sgd")),
    Case("optim_args_not_pairs", with_training(optim_args="momentum"), ("'training.optim_args'", "key=value")),
    Case("tracker_not_installed", lambda r, m: with_training(report_to=missing_tracker())(r, m),
         ("'training.report_to'", "not installed", "report_to: none")),
    Case("unknown_tracker", with_training(report_to=["tensorbord"]), ("'training.report_to'", "'tensorbord'", "tensorboard")),
    Case("deepspeed_missing", with_training(deepspeed="no_such_ds_config.json"), ("'training.deepspeed'",)),
    Case("drop_last_drops_every_eval_batch", with_small_validation(dataloader_drop_last=True),
         ("'training.dataloader_drop_last'", "validation split", "per_device_eval_batch_size")),
    Case("resume_from_checkpoint_set", with_training(resume_from_checkpoint="runs/old/checkpoint-9"),
         ("'training.resume_from_checkpoint'", "automatic", "same command")),
    Case("max_steps_zero", with_training(max_steps=0), ("'training.max_steps'", "trains nothing")),
    Case("fp16_without_gpu", with_training(fp16=True), ("'training.fp16'", "GPU")),
    Case("bf16_without_gpu", with_training(bf16=True), ("'training.bf16'", "no GPU", "use_cpu")),
]
_GPU_CASES = {"fp16_without_gpu", "bf16_without_gpu"}
PARAMS = [pytest.param(case, id=case.id, marks=[NO_GPU] if case.id in _GPU_CASES else []) for case in CASES]


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_timm_dir) -> Models:
    return Models(bert=tiny_bert_dir, timm=tiny_timm_dir)


@pytest.mark.parametrize("case", PARAMS)
def test_check_stops_on_a_training_value_trainer_would_fail_on(case: Case, models, tmp_path, capsys):
    run_case("check", case, models, tmp_path, capsys)


@pytest.mark.parametrize("case", PARAMS)
def test_finetune_stops_before_training(case: Case, models, tmp_path, capsys):
    run_case("finetune", case, models, tmp_path, capsys)


def test_check_reports_the_effective_training_arguments(models, tmp_path, capsys):
    recipe = text_recipe(tmp_path, models)
    recipe["training"].update(metric_for_best_model="eval_loss", gradient_accumulation_steps=2)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["check", str(path)]) == 0
    report = json.loads(capsys.readouterr().out.rpartition("\nOK:")[0])
    training = report["training"]
    assert training["precision"] == ("bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                     else "fp32")
    assert training["per_device_train_batch_size"] == 8 and training["examples_per_step"] == 16
    assert training["steps_per_epoch"] == 2 and training["total_steps"] == 2  # 18 train rows, 1 epoch
    assert training["lr_scheduler_type"] == "cosine" and training["eval_strategy"] == "epoch"
    assert training["greater_is_better"] is False  # a loss: lower is better, whatever the accuracy default says
    assert not (tmp_path / "out").exists()


@NO_GPU
def test_bf16_on_a_cpu_without_native_bf16_warns_in_the_log_and_in_check(models, tmp_path, capsys, caplog,
                                                                         monkeypatch):
    import hf_transfer.training.preflight as preflight

    monkeypatch.setattr(preflight, "_cpu_has_native_bf16", lambda: False)
    recipe = text_recipe(tmp_path, models)
    recipe["training"].update(bf16=True, use_cpu=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="hf_transfer"):
        assert run_cli(["check", str(path)]) == 0
    report = json.loads(capsys.readouterr().out.rpartition("\nOK:")[0])
    assert report["training"]["precision"] == "bf16"
    [warning] = report["training"]["warnings"]
    assert "training.bf16" in warning and "emulated" in warning and "docs/performance.md" in warning
    assert warning in caplog.text
    monkeypatch.setattr(preflight, "_cpu_has_native_bf16", lambda: True)
    assert preflight.preflight_training(__import__("hf_transfer").Recipe.from_dict(recipe)).warnings == ()


# --- the last training batch holding one example, with BatchNorm

def test_a_last_training_batch_of_one_is_dropped_for_batchnorm(models, tmp_path, caplog):
    from hf_transfer import Recipe, finetune

    data = tmp_path / "images"
    write_colour_images(data / "train", {"red": 5, "green": 4}, seed=0, size=8)  # 9 = 2 x 4 + 1
    write_colour_images(data / "validation", {"red": 2, "green": 2}, seed=1, size=8)
    recipe = Recipe.from_dict({
        "task": "image-classification", "model": {"name_or_path": str(models.timm)},
        "data": {"path": str(data), "image_size": 16},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 4, "dataloader_num_workers": 0,
                     "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "out")}})
    with caplog.at_level(logging.WARNING, logger="hf_transfer"):
        result = finetune(recipe)
    assert result.metrics["train"]["steps"] == 4  # 2 full batches per epoch; the batch of 1 is dropped
    assert caplog.text.count("would hold 1 of 9 examples") == 1
    assert (tmp_path / "out" / "metrics.json").is_file()


# --- signals

def test_sigint_while_loading_is_one_line_and_exit_130(models, tmp_path, capsys, monkeypatch):
    import hf_transfer.data.prepare as prepare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "prepare_data", interrupted)
    monkeypatch.setattr("hf_transfer.training.run.prepare_data", interrupted)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(text_recipe(tmp_path, models)), encoding="utf-8")
    assert run_cli(["finetune", str(path)]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "interrupted" in errors[0] and "same command" in errors[0], err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not (tmp_path / "out").exists()


class _SignalAtStep(TrainerCallback):
    """Sends SIGTERM to this process at the end of one step; records the evaluations that follow it."""

    def __init__(self, step: int) -> None:
        self.step, self.sent, self.evaluations_after = step, False, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.sent = True
            signal.raise_signal(signal.SIGTERM)  # GracefulStop's handler (installed at train begin) takes it

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluations_after += self.sent


def _final(metrics: dict) -> dict:
    return {split: {k: v for k, v in metrics[split].items() if k != "loss"} | {"loss": round(metrics[split]["loss"], 6)}
            for split in ("validation", "test")} | {"steps": metrics["train"]["steps"],
                                                    "best": metrics["train"]["best_checkpoint_metric"]}


def test_sigterm_mid_epoch_saves_without_evaluating_and_the_rerun_matches(models, tmp_path, capsys, monkeypatch):
    import hf_transfer.training.run as run
    from hf_transfer import Recipe, finetune

    def recipe_in(out: Path) -> dict:
        recipe = text_recipe(tmp_path, models, data={"path": str(text_data(tmp_path, train=None))})
        recipe["training"].update(num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-3, seed=3,
                                  eval_strategy="epoch", save_strategy="epoch", logging_steps=1)
        recipe["output"] = {"dir": str(out), "keep_checkpoints": True}
        return recipe

    baseline = finetune(Recipe.from_dict(recipe_in(tmp_path / "baseline"))).metrics

    sender = _SignalAtStep(step=2)  # 18 train rows, batch 4: 5 steps an epoch; the signal lands mid-epoch 1
    original = run.build_trainer

    def build(*args, **kwargs):
        made = original(*args, **kwargs)
        made.trainer.add_callback(sender)
        return made

    monkeypatch.setattr(run, "build_trainer", build)
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_in(out)), encoding="utf-8")
    assert run_cli(["finetune", str(path)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert sender.evaluations_after == 0, "evaluated after the signal"
    checkpoints = [p.name for p in (out / "checkpoints").glob("checkpoint-*")]
    assert checkpoints == ["checkpoint-3"], checkpoints  # saved once, at the end of the step after the signal
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert not [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert not (out / "metrics.json").exists()

    monkeypatch.setattr(run, "build_trainer", original)
    resumed = finetune(Recipe.from_dict(recipe_in(out))).metrics
    assert _final(resumed) == _final(baseline)
