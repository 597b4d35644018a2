"""Integration: L2-SP, distillation and DANN on small real slices (../shared data, MobileNetV2, MiniLM).

Each test stays under about a minute on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from hf_transfer import Recipe, finetune
from shared_paths import MOBILENET, REPO, SHARED

pytestmark = pytest.mark.integration


TRAINING = {"per_device_train_batch_size": 32, "disable_tqdm": True, "logging_steps": 2}


def test_l2sp_cifar10_mobilenet(tmp_path):
    recipe = Recipe.from_yaml(REPO / "recipes" / "cifar100-l2sp.yaml", [
        f"data.path={SHARED / 'data' / 'cifar10'}", "data.label_column=label", f"model.name_or_path={MOBILENET}",
        "data.samples_per_class=24", "data.image_size=64", "data.max_eval_samples=60", "data.max_test_samples=100",
        "training.num_train_epochs=2", "training.disable_tqdm=true", "training.logging_steps=2",
        f"output.dir={tmp_path / 'run'}"])
    result = finetune(recipe)
    assert result.metrics["test"]["accuracy"] > 0.25, result.metrics["test"]["accuracy"]
    assert any(e.get("loss_l2sp", 0) > 0 for e in result.trainer.state.log_history)


def test_distillation_sst2_minilm_student_and_teacher(tmp_path):
    data = {"path": str(SHARED / "data" / "sst2"), "max_length": 48, "max_eval_samples": 64,
            "max_test_samples": 200}

    def recipe(out: Path, train: int, method=None, epochs: int = 1) -> Recipe:
        return Recipe.from_dict({
            "task": "text-classification", "model": {"name_or_path": "pypi:all-MiniLM-L6-v2"},
            "data": {**data, "max_train_samples": train}, "method": method,
            "training": {**TRAINING, "num_train_epochs": epochs, "learning_rate": 2e-4,
                         "train_sampling_strategy": "group_by_length"},
            "output": {"dir": str(out)}})

    teacher = finetune(recipe(tmp_path / "teacher", 640), write_card=False)
    assert teacher.metrics["test"]["accuracy"] > 0.6
    student = finetune(recipe(tmp_path / "student", 320, {
        "name": "distillation", "teacher": str(tmp_path / "teacher"), "alpha": 0.7, "cache_teacher_logits": True},
        epochs=3))
    assert student.metrics["test"]["accuracy"] > 0.6, student.metrics["test"]["accuracy"]
    assert any("loss_kd" in e for e in student.trainer.state.log_history)
    assert len(load_file(tmp_path / "student" / "model.safetensors")) == len(student.model.state_dict())


def test_dann_digits_to_inverted_digits(tmp_path):
    from transformers import pipeline

    out = tmp_path / "run"
    recipe = Recipe.from_yaml(REPO / "recipes" / "dann-digits.yaml", [
        f"model.name_or_path={MOBILENET}", "data.max_train_samples=320", "method.target.max_train_samples=320",
        "training.num_train_epochs=2", "training.learning_rate=2e-3", "training.disable_tqdm=true",
        "training.logging_steps=2", f"output.dir={out}"])
    result = finetune(recipe)
    assert result.metrics["test"]["accuracy"] > 0.4  # 10 classes, 20 steps
    assert result.metrics["target_test"]["num_samples"] == 360
    assert any("loss_adv" in e for e in result.trainer.state.log_history)
    assert len(load_file(out / "model.safetensors")) == len(result.model.state_dict())
    assert pipeline("image-classification", model=str(out)).model.config.num_labels == 10
