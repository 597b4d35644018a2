"""Integration: the shipped CIFAR-10 -> CIFAR-100 stages recipe on a small real slice (MobileNetV2, 64 px).

Stays under about a minute on two CPU cores.
"""

from __future__ import annotations

import json

import pytest

from hf_transfer import Recipe, finetune
from shared_paths import MOBILENET, REPO, SHARED

pytestmark = pytest.mark.integration



def test_cifar10_to_cifar100_stages_recipe(tmp_path):
    out = tmp_path / "run"
    recipe = Recipe.from_yaml(REPO / "recipes" / "cifar10-to-cifar100.yaml", [
        f"stages.0.data.path={SHARED / 'data' / 'cifar10'}", f"stages.1.data.path={SHARED / 'data' / 'cifar100'}",
        f"model.name_or_path={MOBILENET}", "data.image_size=64", "data.max_eval_samples=100",
        "data.max_test_samples=200", "stages.0.data.max_train_samples=320", "stages.1.data.max_train_samples=320",
        "training.disable_tqdm=true", "training.logging_steps=5", f"output.dir={out}"])
    result = finetune(recipe)
    metrics = json.loads((out / "metrics.json").read_text())
    source = json.loads((out / "stages" / "cifar10" / "metrics.json").read_text())
    assert len(source["labels"]) == 10 and len(metrics["labels"]) == 100
    assert source["test"]["accuracy"] > 0.3, source["test"]["accuracy"]  # ImageNet features, 32 per class
    assert [s["stage"] for s in metrics["stages"]] == ["cifar10", "cifar100"]
    forgetting = metrics["forgetting"]
    assert forgetting["accuracy_before"] == source["test"]["accuracy"] and forgetting["num_samples"] == 200
    assert result.metrics["test"]["num_samples"] == 200
    card = (out / "README.md").read_text()
    assert "stage 'cifar10' (all)" in card and "Forgetting of the source task" in card
