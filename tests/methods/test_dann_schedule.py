"""DANN's schedule and model selection: learning-rate annealing, adversarial warm-up, BatchNorm on target batches,
checkpoint selection by target metrics, and the source-only comparison (``evaluation.compare_source_only``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from test_dann import image_dann_recipe
from hf_transfer import Recipe, finetune
from hf_transfer.cli import _print_summary
from hf_transfer.errors import RecipeError
from hf_transfer.methods.dann import (AnnealedSchedule, adversarial_coefficient, annealed_rate, entropy,
                                      reversal_coefficient, stackable)


def dann_recipe(model_dir, source, target, out, training=None, evaluation=None, **method):
    """``test_dann``'s recipe without flips."""
    return image_dann_recipe(model_dir, source, target, out, training, evaluation, hflip=0.0, **method)


def built(recipe, tmp_path):
    from hf_transfer.data.prepare import prepare_data
    from hf_transfer.tasks.base import get_task
    from hf_transfer.training.run import build_trainer

    data = prepare_data(recipe.data, get_task(recipe.task).input_roles, 42)
    return build_trainer(recipe, data, tmp_path / "ckpt").trainer


# ------------------------------------------------------------------ formulas

@pytest.mark.parametrize("progress, expected", [(0.0, 1.0), (0.5, 6.0 ** -0.75), (1.0, 11.0 ** -0.75)])
def test_annealing_is_the_papers_formula(progress, expected):
    assert annealed_rate(progress) == pytest.approx(expected, rel=1e-12)
    assert annealed_rate(progress, alpha=4, beta=0.5) == pytest.approx((1 + 4 * progress) ** -0.5, rel=1e-12)
    assert AnnealedSchedule(total_steps=20, alpha=10, beta=0.75)(round(20 * progress)) == pytest.approx(expected)


def test_warmup_holds_the_coefficient_at_zero_then_ramps_over_the_remaining_steps():
    values = [adversarial_coefficient(step, 10, warmup=4) for step in range(11)]
    assert values[:5] == [0.0] * 5
    assert values[5] == pytest.approx(reversal_coefficient(1 / 6))
    assert values[7] == pytest.approx(reversal_coefficient(0.5))
    assert values[10] == pytest.approx(reversal_coefficient(1.0)) and all(a < b for a, b in zip(values[4:], values[5:]))
    assert [adversarial_coefficient(s, 10) for s in range(11)] == [reversal_coefficient(s / 10) for s in range(11)]


def test_entropy_of_uniform_and_confident_predictions():
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(entropy(logits), [np.log(4), 0.0], atol=1e-12)


# ------------------------------------------------------------------ inside a step

def test_warmup_trains_the_source_alone_then_the_domain_classifier_starts(tiny_timm_dir, image_folder_data,
                                                                          target_images, tmp_path):
    trainer = built(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run", warmup_steps=5),
                    tmp_path)
    method, model = trainer.method, trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.state.max_steps, trainer.state.global_step = 10, 2
    ce, outputs = trainer._loss(model, dict(batch), True)
    assert set(method.loss_terms(model, batch, outputs, ce)) == {"ce"} and method.coefficient == 0.0
    trainer.state.global_step = 8
    ce, outputs = trainer._loss(model, dict(batch), True)
    adversarial = method.loss_terms(model, batch, outputs, ce)["adv"]
    model.zero_grad()
    adversarial.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.discriminator.parameters())
    stem = model.timm_model.conv_stem.weight.grad
    assert stem is not None and stem.abs().sum() > 0
    assert method.coefficient == pytest.approx(adversarial_coefficient(8, 10, warmup=5))


def test_joint_pass_shares_batch_statistics_and_alone_moves_the_running_ones(tiny_timm_dir, image_folder_data,
                                                                            target_images, tmp_path):
    import torch.nn.functional as F

    trainer = built(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run",
                                batchnorm="joint"), tmp_path)
    method, model = trainer.method, trainer.model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and set(method._momenta) == set(norms)
    method.start_joint_passes()
    trainer.state.max_steps, trainer.state.global_step = 10, 5
    batch = next(iter(trainer.get_train_dataloader()))
    target = next(method.unlabelled)
    method.unlabelled = iter([target])
    before = [m.running_mean.clone() for m in norms]
    ce, outputs = trainer._loss(model, dict(batch), True)  # the Trainer's own source pass
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    terms = method.loss_terms(model, batch, outputs, ce)
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    assert all(m.momentum == 0.0 for m in norms)
    with torch.no_grad():  # the same weights, source and target in one batch: the source loss of the joint pass
        joint = model(pixel_values=torch.cat([batch["pixel_values"], target["pixel_values"]])).logits
    expected = F.cross_entropy(joint[:len(batch["labels"])], batch["labels"])
    assert terms["ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["ce"].item() != pytest.approx(ce.item(), rel=1e-3)  # not the source pass's own statistics
    method.end_joint_passes()
    assert all(m.momentum == 0.1 for m in norms)


def test_separate_passes_keep_the_trainers_source_loss(tiny_timm_dir, image_folder_data, target_images, tmp_path):
    trainer = built(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run",
                                batchnorm="separate"), tmp_path)
    method, model = trainer.method, trainer.model.train()
    assert method._momenta == {}
    trainer.state.max_steps, trainer.state.global_step = 10, 5
    batch = next(iter(trainer.get_train_dataloader()))
    ce, outputs = trainer._loss(model, dict(batch), True)
    terms = method.loss_terms(model, batch, outputs, ce)
    assert terms["ce"].item() == ce.item() and "adv" in terms


def test_batches_stack_only_with_the_same_tensors_up_to_the_batch_size():
    image = {"pixel_values": torch.zeros(4, 3, 8, 8), "labels": torch.zeros(4)}
    assert stackable([image, {"pixel_values": torch.ones(2, 3, 8, 8), "labels": torch.ones(2)}])
    assert not stackable([image, {"pixel_values": torch.ones(2, 3, 9, 8), "labels": torch.ones(2)}])
    text = {"input_ids": torch.zeros(4, 7), "labels": torch.zeros(4)}
    assert not stackable([text, {"input_ids": torch.zeros(4, 9), "labels": torch.zeros(4)}])
    assert not stackable([image, text])


# ------------------------------------------------------------------ whole runs

def test_annealed_learning_rate_in_the_trainers_logs(tiny_timm_dir, image_folder_data, target_images, tmp_path):
    result = finetune(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run",
                                  lr_schedule="dann", adversarial_weight=0))
    state = result.trainer.state
    logged = [(e["step"], e["learning_rate"]) for e in state.log_history if "learning_rate" in e]
    assert len(logged) == state.max_steps > 2
    for step, rate in logged:  # the rate optimizer step ``step`` used, from progress (step - 1) / max_steps
        assert rate == pytest.approx(5e-3 * annealed_rate((step - 1) / state.max_steps), rel=1e-6)
    assert result.metrics["domain_adaptation"]["lr_schedule"] == "dann"
    norms = [m for m in result.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert result.trainer.method._momenta == {} and all(m.momentum == 0.1 for m in norms)  # source only: no freeze


@pytest.mark.parametrize("selection, key, best", [("target_entropy", "eval_target_entropy", min),
                                                  ("target_val", "eval_target_labelled_accuracy", max)])
def test_selection_keeps_the_checkpoint_with_the_best_target_metric(tiny_timm_dir, image_folder_data, target_images,
                                                                     tmp_path, selection, key, best):
    result = finetune(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run",
                                  training={"num_train_epochs": 3}, selection=selection, target_labelled_per_class=1))
    state = result.trainer.state
    evaluations = [e for e in state.log_history if key in e]
    assert len(evaluations) == 3 and all("eval_target_accuracy" in e for e in evaluations)
    values = [e[key] for e in evaluations]
    chosen = values.index(best(values))  # the first of equals: the Trainer needs a strict improvement
    assert state.best_metric == pytest.approx(values[chosen])
    assert state.best_global_step == evaluations[chosen]["step"]
    assert result.metrics["train"]["best_checkpoint_metric"] == pytest.approx(values[chosen])
    norms = [m for m in result.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert result.trainer.method.statistics and all(m.momentum == 0.1 for m in norms)  # per domain: untouched
    assert all(p.grad is None for p in result.trainer.method.discriminator.parameters())  # cleared every step
    adaptation = result.metrics["domain_adaptation"]
    assert adaptation["selection"] == selection and adaptation["selection_metric"] == key.removeprefix("eval_")


def test_compare_source_only_reports_both_domains_and_reuses_a_finished_baseline(
        tiny_timm_dir, image_folder_data, target_images, tmp_path, monkeypatch, capsys):
    from hf_transfer.runs import source_only

    out = tmp_path / "run"
    recipe = dann_recipe(tiny_timm_dir, image_folder_data, target_images, out, training={"num_train_epochs": 1},
                         evaluation={"compare_source_only": True})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(source_only, "run_compared", interrupted)  # stopped after the baseline, before the run
    with pytest.raises(KeyboardInterrupt):
        finetune(recipe)
    baseline = out / "source_only"
    assert yaml.safe_load((baseline / "recipe.yaml").read_text())["method"]["adversarial_weight"] == 0
    first = (baseline / "metrics.json").stat().st_mtime_ns
    monkeypatch.undo()

    result = finetune(recipe)
    assert (baseline / "metrics.json").stat().st_mtime_ns == first  # reused, not trained again
    metrics = json.loads((out / "metrics.json").read_text())
    reference = json.loads((baseline / "metrics.json").read_text())
    assert metrics["source_only"]["target_test"]["accuracy"] == reference["target_test"]["accuracy"]
    gain = metrics["adaptation_gain"]
    assert gain["target"]["accuracy"] == pytest.approx(metrics["target_test"]["accuracy"]
                                                      - reference["target_test"]["accuracy"], abs=1e-6)
    assert gain["source"]["split"] == "test" and gain["target"]["split"] == "target_test"

    card = (out / "README.md").read_text()
    assert "### Source and target domains" in card and "source only (same recipe" in card
    assert f"{metrics['target_test']['accuracy']:.2%}" in card and "**adaptation gain**" in card
    index = yaml.safe_load(card.split("---")[1])["model-index"][0]["results"]
    names = {entry["dataset"]["name"] for entry in index}
    assert names == {image_folder_data.name, f"{target_images.name} (target domain)"}
    assert any(entry["dataset"]["split"] == "test" and entry["dataset"]["name"].endswith("(target domain)")
               for entry in index)

    capsys.readouterr()
    _print_summary(result.metrics, out)
    printed = capsys.readouterr().out
    assert "source only" in printed and "adaptation gain" in printed
    assert f"{metrics['target_test']['accuracy']:.2%}" in printed and f"{metrics['test']['accuracy']:.2%}" in printed


# ------------------------------------------------------------------ bad options

@pytest.mark.parametrize("method, message", [
    ({"warmup_steps": 5, "warmup_fraction": 0.2}, "'method.warmup_steps' and 'method.warmup_fraction' both set"),
    ({"warmup_fraction": 1.0}, "'method.warmup_fraction' in [0, 1)"),
    ({"selection": "target_val"}, "'method.selection' = target_val needs labelled target examples"),
    ({"selection": "best"}, "'method.selection' must be one of 'source_val', 'target_entropy', 'target_val'"),
    ({"lr_schedule": "cosine"}, "'method.lr_schedule' must be one of 'none', 'dann'"),
    ({"lr_beta": -1}, "'method.lr_beta' must be >= 0"),
])
def test_bad_options_are_one_line_errors(tmp_path, method, message):
    with pytest.raises(RecipeError) as error:
        dann_recipe(tmp_path, tmp_path, tmp_path, tmp_path / "run", **method)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("training, evaluation, method, message", [
    ({"lr_scheduler_type": "linear"}, {}, {"lr_schedule": "dann"},
     "'method.lr_schedule' = dann replaces training.lr_scheduler_type"),
    ({"metric_for_best_model": "f1_macro"}, {}, {"selection": "target_entropy"},
     "'method.selection' = target_entropy chooses the checkpoint, but training.metric_for_best_model"),
    ({"load_best_model_at_end": False}, {}, {"selection": "target_entropy"}, "keep training.load_best_model_at_end"),
    ({}, {"compare_source_only": True}, {"adversarial_weight": 0}, "which this recipe already has"),
])
def test_conflicts_stop_the_run_before_anything_is_written(tiny_timm_dir, image_folder_data, target_images, tmp_path,
                                                           training, evaluation, method, message):
    out = tmp_path / "run"
    with pytest.raises(RecipeError) as error:
        finetune(dann_recipe(tiny_timm_dir, image_folder_data, target_images, out, training=training,
                             evaluation=evaluation, **method))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not out.exists()


def test_compare_source_only_needs_a_domain_adaptation_method(tiny_timm_dir, image_folder_data, tmp_path):
    recipe = Recipe.from_dict({"task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
                               "data": {"path": str(image_folder_data)}, "evaluation": {"compare_source_only": True},
                               "output": {"dir": str(tmp_path / "run")}})
    with pytest.raises(RecipeError, match=r"^'evaluation.compare_source_only' compares .* use method.name: dann"):
        finetune(recipe)
    with pytest.raises(RecipeError, match="does not combine with cross-validation"):
        recipe.replace({"evaluation.cross_validate": 3})
