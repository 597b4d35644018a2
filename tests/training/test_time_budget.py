"""``training.time_budget``: parsing, the length chosen from timed steps (a fake clock), the schedule following it,
resuming with the same length, and the warning for runs of fewer than ~50 optimizer steps."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict

import pytest
import torch
import yaml
from transformers import TrainerControl, TrainerState, TrainingArguments, get_scheduler

import hf_transfer.training.run as run
from hf_transfer import finetune
from hf_transfer.cli import run_cli
from hf_transfer.errors import RecipeError
from hf_transfer.recipe import Recipe
from hf_transfer.training.budget import (BUDGET_MAX_EPOCHS, FEW_STEPS, PROBE_STEPS, WARMUP_STEPS, BudgetPlan,
                                         TimeBudgetCallback, follow_total, parse_time_budget)
from hf_transfer.training.preflight import preflight_training

from test_bad_inputs import one_error
from test_end_to_end import text_recipe


def budget_recipe(model_dir, data_dir, out, **training) -> Recipe:
    """The end-to-end text recipe without its ``num_train_epochs`` (which would bound the budgeted length)."""
    recipe = text_recipe(model_dir, data_dir, out, strategy="linear_probe").to_dict()
    recipe["training"].pop("num_train_epochs")
    recipe["training"].update(training)
    return Recipe.from_dict(recipe)


@pytest.mark.parametrize("value, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("2.5h", 9000), (45, 45),
                                            ("600", 600), ("1m 30s", 90), (None, None)])
def test_durations_parse(value, seconds):
    assert parse_time_budget(value) == seconds


@pytest.mark.parametrize("value", ["10 minutes", "", "soon", 0, -5, True, "1d", [10], float("nan")])
def test_a_bad_budget_is_one_error_line_before_anything_loads(value, tiny_bert_dir, text_csv_data, tmp_path, capsys):
    recipe = text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "out").to_dict()
    recipe["training"]["time_budget"] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    line = one_error(capsys, run_cli(["finetune", str(path)]), "'training.time_budget'", "10m",
                     before_training=True)
    assert "Traceback" not in line and not (tmp_path / "out").exists()


def test_a_misspelt_budget_key_suggests_the_right_one(tiny_bert_dir, text_csv_data, tmp_path):
    with pytest.raises(RecipeError, match="time_budget"):
        text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "out", training={"time_budgte": "10m"})


def test_the_budget_is_not_a_trainer_argument_and_bounds_stay(tiny_bert_dir, text_csv_data, tmp_path):
    plain = preflight_training(budget_recipe(tiny_bert_dir, text_csv_data, tmp_path / "a", time_budget="2m")).args
    assert plain.num_train_epochs == BUDGET_MAX_EPOCHS and plain.eval_strategy == "steps"
    capped = preflight_training(budget_recipe(tiny_bert_dir, text_csv_data, tmp_path / "b", time_budget="2m",
                                              num_train_epochs=7, eval_strategy="epoch")).args
    assert capped.num_train_epochs == 7 and capped.eval_strategy == "epoch"  # the recipe's own values stay


class FakeClock:
    """Seconds that pass only when the test says: each optimizer step costs ``step_s``."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.now


def test_a_budgeted_run_sets_its_length_from_the_timed_steps_and_ends_within_it(
        tiny_bert_dir, text_csv_data, tmp_path, monkeypatch, caplog):
    clock, budget = FakeClock(step_s=0.5), 20.0
    made: list[TimeBudgetCallback] = []
    original = run.budget_callback

    def with_fake_clock(training, sizes, started):
        callback = original(training, sizes, clock())
        callback.clock = clock
        timed = callback.on_step_end

        def on_step_end(args, state, control, **kwargs):
            clock.now += clock.step_s  # the step that just ended took step_s
            return timed(args, state, control, **kwargs)

        callback.on_step_end = on_step_end
        accounted = callback.on_evaluate

        def on_evaluate(args, state, control, **kwargs):
            clock.now += 0.125  # an evaluation costs what the callback estimates: the first plan stays
            return accounted(args, state, control, **kwargs)

        callback.on_evaluate = on_evaluate
        made.append(callback)
        return callback

    monkeypatch.setattr(run, "budget_callback", with_fake_clock)
    recipe = budget_recipe(tiny_bert_dir, text_csv_data, tmp_path / "run", time_budget=budget, learning_rate=1e-2)
    with caplog.at_level(logging.INFO):
        metrics = finetune(recipe).metrics
    report = metrics["train"]["time_budget"]
    assert report["step_s"] == pytest.approx(clock.step_s) and report["measured"]  # measured, not wall time
    assert report["decided_at_step"] == WARMUP_STEPS + PROBE_STEPS
    # what fits: 95 % of the budget, less the steps timed so far and the (estimated) evaluations
    assert report["save_s"] == 0  # checkpoints cost no fake time
    fits = (0.95 * budget - report["elapsed_s"] - report["evaluations"] * report["eval_s"]
            - report["eval_s"] * 16 / 4) / clock.step_s  # final evaluation of validation (4) and test (12)
    assert report["max_steps"] == report["decided_at_step"] + math.floor(fits + 1e-9)
    assert metrics["train"]["steps"] == report["max_steps"] and not report["stopped_early"]
    assert clock.now <= budget  # it ended within the budget
    assert report["max_steps"] < FEW_STEPS and "optimizer steps" in caplog.text and "fewer than 50" in caplog.text
    # evaluation cadence followed the length; the cosine schedule reached its end at the chosen last step
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    evaluated = [entry["step"] for entry in history if "eval_loss" in entry]
    assert len(evaluated) >= 3 and evaluated[-1] == report["max_steps"]
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
    assert rates[-1] < 0.05 * 1e-2 < max(rates)
    assert "Time budget 20s" in caplog.text and len(made) == 1


def test_the_schedule_follows_a_new_total_exactly():
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [parameter], "lr": 1e-3}, {"params": [], "lr": 1e-2}])
    args = TrainingArguments(output_dir="unused", lr_scheduler_type="cosine", warmup_steps=0.1, report_to="none")
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=args.get_warmup_steps(1000), num_training_steps=1000)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    assert follow_total(scheduler, args, 60)
    reference_optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3},
                                             {"params": [], "lr": 1e-2}])
    reference = get_scheduler("cosine", reference_optimizer, num_warmup_steps=6, num_training_steps=60)
    for step in range(7, 60):
        assert scheduler.get_last_lr() == pytest.approx([1e-3 * reference.lr_lambdas[0](step),
                                                         1e-2 * reference.lr_lambdas[0](step)])
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_a_resumed_run_keeps_the_length_chosen_before(tmp_path):
    first = TimeBudgetCallback(60, eval_examples=10, final_examples=20)
    args = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=1 << 30,
                             save_strategy="steps", save_steps=1 << 30, report_to="none")
    state, control = TrainerState(max_steps=5000, num_train_epochs=100), TrainerControl()
    clock = FakeClock(0.25)
    first.clock = clock
    first.on_train_begin(args, state, control)
    for step in range(1, WARMUP_STEPS + PROBE_STEPS + 1):
        clock.now += clock.step_s
        state.global_step = step
        first.on_step_end(args, state, control)
    chosen = first.plan.max_steps
    assert state.max_steps == chosen < 5000 and first.plan.step_s == pytest.approx(0.25)
    saved = json.loads(json.dumps(first.state()))  # as trainer_state.json holds it
    resumed_state = TrainerState(max_steps=5000, num_train_epochs=100, global_step=40,
                                 stateful_callbacks={"TimeBudgetCallback": saved})
    resumed = TimeBudgetCallback(**saved["args"])
    resumed.on_train_begin(args, resumed_state, TrainerControl())
    assert resumed_state.max_steps == chosen and resumed_state.eval_steps == first.plan.eval_steps


def test_the_budget_stops_a_run_whose_steps_turn_slow(tmp_path):
    """The plan's estimate is a guess; the guard ends the run at the budget whatever happens later."""
    callback = TimeBudgetCallback(30, eval_examples=4, final_examples=4)
    args = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=1 << 30,
                             save_strategy="steps", save_steps=1 << 30, report_to="none")
    state, clock = TrainerState(max_steps=10_000, num_train_epochs=100), FakeClock(0.1)
    callback.clock = clock
    callback.on_train_begin(args, state, TrainerControl())
    step = 0
    while True:
        step += 1
        clock.now += clock.step_s if step < 20 else 2.0  # the machine got busy
        state.global_step = step
        control = callback.on_step_end(args, state, TrainerControl())
        if control.should_training_stop:
            break
    assert clock.now <= 30 and callback.stopped_early and control.should_evaluate and control.should_save


def test_runs_of_few_steps_are_warned_once_before_training(tiny_bert_dir, text_csv_data, tmp_path, caplog):
    recipe = text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "run", training={"num_train_epochs": 1})
    plan = preflight_training(recipe)
    warning = plan.short_run_warning({"train": 36, "validation": 4})
    assert warning is not None and "5 optimizer steps" in warning and "time_budget" in warning
    assert plan.short_run_warning({"train": 36 * 20, "validation": 4}) is None  # 90 steps
    budgeted = preflight_training(budget_recipe(tiny_bert_dir, text_csv_data, tmp_path / "b", time_budget="1m"))
    assert budgeted.short_run_warning({"train": 36}) is None  # its length is chosen (and warned about) later
    assert plan.summary({"train": 36, "validation": 4})["short_run"] == warning  # hf-transfer check shows it too
    with caplog.at_level(logging.WARNING):
        finetune(recipe)
    assert sum("optimizer steps" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records) == 1


def test_a_short_budget_evaluates_less_often_than_a_long_one(tmp_path):
    """Evaluations take at most ~20 % of the time left: with slow evaluations a short budget gets few of them."""
    args = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=1 << 30,
                             save_strategy="steps", save_steps=1 << 30, report_to="none",
                             per_device_train_batch_size=8)

    def plan(seconds: float):
        callback = TimeBudgetCallback(seconds, eval_examples=80, final_examples=80)  # an evaluation ~ 5 steps
        state, clock = TrainerState(max_steps=100_000, num_train_epochs=100), FakeClock(1.0)
        callback.clock = clock
        callback.on_train_begin(args, state, TrainerControl())
        for step in range(1, WARMUP_STEPS + PROBE_STEPS + 1):
            clock.now += clock.step_s
            state.global_step = step
            callback.on_step_end(args, state, TrainerControl())
        return callback.plan

    short, long = plan(60), plan(3600)
    assert short.eval_s == pytest.approx(5.0)
    assert short.evaluations <= 3 and long.evaluations == 8
    assert short.evaluations * short.eval_s <= 0.2 * (60 - short.elapsed_s) + short.eval_s


def simulated_run(tmp_path, seconds: float, examples: int, probe_s: float, step_s: float, eval_s: float):
    """A budgeted run driven as ``Trainer`` drives its callbacks: steps of ``probe_s`` while the first ones are
    timed, then of ``step_s``, and an evaluation plus checkpoint of ``eval_s`` wherever the plan puts one.
    Returns the callback, the first plan, the evaluations during training and the clock at the end."""
    args = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=1 << 30,
                             save_strategy="steps", save_steps=1 << 30, report_to="none")
    callback = TimeBudgetCallback(seconds, eval_examples=examples, final_examples=examples)
    state, clock = TrainerState(max_steps=100_000, num_train_epochs=100), FakeClock(probe_s)
    callback.clock = clock
    callback.on_train_begin(args, state, TrainerControl())
    step, first_plan, evaluations = 0, None, 0
    while True:
        step += 1
        clock.now += probe_s if step <= WARMUP_STEPS + PROBE_STEPS else step_s
        state.global_step = step
        control = callback.on_step_end(args, state, TrainerControl())
        if first_plan is None and callback.plan is not None:
            first_plan = BudgetPlan(**asdict(callback.plan))  # a copy: a close re-plan updates the plan in place
        if step >= state.max_steps or control.should_training_stop:
            return callback, first_plan, evaluations, clock.now
        if state.eval_steps and step % state.eval_steps == 0:  # what Trainer does between steps: evaluate, save
            evaluations += 1
            clock.now += eval_s
            callback.on_evaluate(args, state, control)
            callback.on_save(args, state, control)


def test_the_plan_follows_steps_that_turn_fast(tmp_path):
    """The timed first steps were slow (``group_by_length`` puts the longest batch first); after each evaluation
    the run plans again from all steps so far and uses the budget, instead of ending far before it."""
    callback, first_plan, _, end = simulated_run(tmp_path, 100, examples=8, probe_s=0.5, step_s=0.1, eval_s=1.0)
    final_s = 2 * 1.0  # the final evaluation (validation + test) and checkpoint
    assert callback.plan.max_steps > 3 * first_plan.max_steps  # the first plan assumed 0.5 s steps for the whole run
    assert 0.8 * 100 <= end + final_s <= 100, end
    assert callback.plan.step_s < 0.2 and callback.report()["measured"]


def test_a_run_with_one_evaluation_plans_again_before_its_end(tmp_path):
    """The MPNet case: evaluations so dear that only the final one is affordable, and steps that turn fast after
    the timed ones. With no evaluation to plan again at, the run kept its first plan and used half the budget; a
    quarter of the steps still planned is a reason to plan again too."""
    callback, first_plan, evaluations, end = simulated_run(tmp_path, 100, examples=200, probe_s=1.0, step_s=0.5,
                                                           eval_s=10.0)
    assert first_plan.evaluations == 1  # 200 examples cost ~100 steps' time: only the last is affordable
    assert callback.plan.max_steps > 1.5 * first_plan.max_steps
    assert callback.plan.step_s == pytest.approx(0.5, rel=0.1) and evaluations == 0
    assert end >= 0.6 * 100, end  # the budget used, not ended at its half
