"""DANN: gradient reversal, the ramp, and an end-to-end run whose saved model holds no domain classifier."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_sentences, write_colour_images, write_text_csv
from hf_transfer import Recipe, finetune
from hf_transfer.errors import DataError
from hf_transfer.methods.dann import grad_reverse, reversal_coefficient


@pytest.mark.parametrize("coefficient", [0.0, 0.3, 1.0])
def test_reversal_layer_is_identity_forward_and_flips_and_scales_the_gradient(coefficient):
    x = torch.randn(4, 5, requires_grad=True)
    weights = torch.randn(4, 5)
    y = grad_reverse(x, coefficient)
    torch.testing.assert_close(y, x)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, -coefficient * weights)


def test_ramp_goes_from_zero_to_one():
    values = [reversal_coefficient(p / 10) for p in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(1.0, abs=1e-4)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert reversal_coefficient(0.5) == pytest.approx(2 / (1 + torch.exp(torch.tensor(-5.0)).item()) - 1)


def image_dann_recipe(tiny_timm_dir, image_folder_data, target, out, training=None, evaluation=None, hflip=0.5,
                      **method):
    return Recipe.from_dict({
        "task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
        "data": {"path": str(image_folder_data), "image_size": 32,
                 "augmentation": {"random_resized_crop": False, "hflip": hflip}},
        "method": {"name": "dann", "target": {"path": str(target)}, "hidden_size": 16, **method},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 5e-3,
                     "dataloader_num_workers": 0, "logging_steps": 1, "disable_tqdm": True, **(training or {})},
        "evaluation": evaluation or {},
        "output": {"dir": str(out)}})


@pytest.fixture(scope="module")
def shifted_images(tmp_path_factory):
    """The same colour classes, other noise: a target domain with train (6 per class) and test (3 per class)."""
    root = tmp_path_factory.mktemp("target_images")
    write_colour_images(root / "train", {"red": 6, "green": 6, "blue": 6}, seed=5, size=20)
    write_colour_images(root / "test", {"red": 3, "green": 3, "blue": 3}, seed=6, size=20)
    return root


def test_image_run_reports_target_metrics_and_saves_no_domain_classifier(tiny_timm_dir, image_folder_data,
                                                                         shifted_images, tmp_path):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "run"
    result = finetune(image_dann_recipe(tiny_timm_dir, image_folder_data, shifted_images, out,
                                        target_labelled_per_class=1))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target_test"]["num_samples"] == 9 and "accuracy" in metrics["target_validation"]
    logged = [entry for entry in result.trainer.state.log_history if "loss_adv" in entry]
    assert logged and all("loss_ce" in e and "loss_target_ce" in e for e in logged)
    method = result.trainer.method
    assert 0 < method.coefficient < 1
    saved = set(load_file(out / "model.safetensors"))
    assert saved == {name.removeprefix("timm_model.") for name in result.model.state_dict()}
    assert not any(name.startswith(("discriminator", "domain")) for name in saved)
    assert AutoModelForImageClassification.from_pretrained(out).config.num_labels == 3


def test_domain_classifier_trains_and_reversed_gradient_reaches_the_backbone(tiny_timm_dir, image_folder_data,
                                                                             shifted_images, tmp_path):
    recipe = image_dann_recipe(tiny_timm_dir, image_folder_data, shifted_images, tmp_path / "run")
    from hf_transfer.data.prepare import prepare_data
    from hf_transfer.tasks.base import get_task
    from hf_transfer.training.run import build_trainer

    data = prepare_data(recipe.data, get_task(recipe.task).input_roles, 42)
    trainer = build_trainer(recipe, data, tmp_path / "ckpt").trainer
    method, model = trainer.method, trainer.model.train()
    trainer.state.max_steps, trainer.state.global_step = 10, 5
    batch = next(iter(trainer.get_train_dataloader()))
    ce, outputs = trainer._loss(model, dict(batch), True)
    adversarial = method.loss_terms(model, batch, outputs, ce)["adv"]
    model.zero_grad()
    adversarial.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.discriminator.parameters())
    stem = model.timm_model.conv_stem.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert method.coefficient == pytest.approx(reversal_coefficient(0.5))


def test_source_only_baseline_skips_the_target_forward(tiny_timm_dir, image_folder_data, shifted_images, tmp_path):
    result = finetune(image_dann_recipe(tiny_timm_dir, image_folder_data, shifted_images, tmp_path / "run",
                                        adversarial_weight=0))
    assert not any("loss_adv" in e for e in result.trainer.state.log_history)
    assert "target_test" in result.metrics


def test_target_with_another_label_set_is_a_clear_error(tiny_timm_dir, image_folder_data, tmp_path):
    write_colour_images(tmp_path / "other" / "train", {"red": 3, "green": 3}, seed=7, size=20)
    with pytest.raises(DataError, match=r"'method.target' = .* has labels \['green', 'red'\] but the source"):
        finetune(image_dann_recipe(tiny_timm_dir, image_folder_data, tmp_path / "other", tmp_path / "run"))


def test_text_run_with_bert_features(tiny_bert_dir, text_csv_data, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    write_text_csv(target / "train.csv", make_sentences(24, seed=3))
    write_text_csv(target / "test.csv", make_sentences(8, seed=4))
    recipe = Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 32},
        "method": {"name": "dann", "target": {"path": str(target)}, "hidden_size": 8},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                     "logging_steps": 1, "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "run")}})
    result = finetune(recipe)
    assert result.metrics["target_test"]["num_samples"] == 8
    assert any("loss_adv" in e for e in result.trainer.state.log_history)


def test_checkpoints_carry_the_domain_classifier_and_a_resume_restores_it(tiny_timm_dir, image_folder_data,
                                                                        shifted_images, tmp_path):
    from safetensors.torch import load_file as read
    from transformers import TrainerState

    from hf_transfer.data.prepare import prepare_data
    from hf_transfer.methods.dann import DomainClassifierCheckpoint
    from hf_transfer.tasks.base import get_task
    from hf_transfer.training.run import build_trainer

    out = tmp_path / "run"
    recipe = image_dann_recipe(tiny_timm_dir, image_folder_data, shifted_images, out).replace(
        {"output.keep_checkpoints": True, "training.load_best_model_at_end": False})
    trained = finetune(recipe).trainer
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    assert checkpoints and all((c / DomainClassifierCheckpoint.FILE).is_file() for c in checkpoints)
    last = checkpoints[-1]
    saved = read(last / DomainClassifierCheckpoint.FILE)
    final = trained.method.discriminator.state_dict()
    assert all(torch.equal(saved[k], final[k]) for k in final)  # the last checkpoint is the end of training

    recipe = image_dann_recipe(tiny_timm_dir, image_folder_data, shifted_images, tmp_path / "again")
    resumed = build_trainer(recipe, prepare_data(recipe.data, get_task(recipe.task).input_roles, 42),
                            out / "checkpoints").trainer
    fresh = {k: v.clone() for k, v in resumed.method.discriminator.state_dict().items()}
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)
    callback = next(c for c in resumed.callback_handler.callbacks if isinstance(c, DomainClassifierCheckpoint))
    state = TrainerState(global_step=int(last.name.split("-")[1]))
    callback.on_train_begin(resumed.args, state, resumed.control)
    restored = resumed.method.discriminator.state_dict()
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
