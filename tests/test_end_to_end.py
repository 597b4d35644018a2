"""End to end on tiny random models and generated data: train, evaluate, save, reload, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hf_transfer import Recipe, finetune
from hf_transfer.errors import OutputError
from hf_transfer.strategies import STRATEGIES

STRATEGY_OPTIONS = {"partial": {"frozen_layers": 1}, "gradual_unfreeze": {"head_epochs": 1}}


def image_recipe(model_dir: Path, data_dir: Path, out: Path, **sections) -> Recipe:
    data = {"path": str(data_dir), "image_size": 32, "augmentation": {"random_resized_crop": False}}
    base = {"task": "image-classification", "model": {"name_or_path": str(model_dir)}, "data": data,
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 5e-3,
                         "dataloader_num_workers": 0, "logging_steps": 1, "disable_tqdm": True},
            "output": {"dir": str(out)}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return Recipe.from_dict(base)


def text_recipe(model_dir: Path, data_dir: Path, out: Path, **sections) -> Recipe:
    base = {"task": "text-classification", "model": {"name_or_path": str(model_dir)},
            "data": {"path": str(data_dir), "max_length": 32},
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                         "logging_steps": 1, "disable_tqdm": True},
            "output": {"dir": str(out)}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return Recipe.from_dict(base)


def test_image_run_writes_a_folder_the_ecosystem_loads(tiny_timm_dir, image_folder_data, tmp_path):
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    out = tmp_path / "run"
    result = finetune(image_recipe(tiny_timm_dir, image_folder_data, out))
    for name in ("config.json", "model.safetensors", "recipe.yaml", "metrics.json", "README.md",
                 "confusion_matrix.png"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists() and not (out / "training_args.bin").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 12 and len(metrics["test"]["confusion_matrix"]) == 3

    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.num_labels == 3
    classifier = pipeline("image-classification", model=str(out))
    files = sorted((image_folder_data / "test").rglob("*.png"))
    predicted = [classifier(Image.open(f))[0]["label"] for f in files]
    # the evaluation predictions, reconstructed from the confusion matrix, must match the pipeline's
    truth = [f.parent.name for f in files]
    matrix = np.zeros((3, 3), dtype=int)
    for t, p in zip(truth, predicted):
        matrix[["blue", "green", "red"].index(t), ["blue", "green", "red"].index(p)] += 1
    assert matrix.tolist() == metrics["test"]["confusion_matrix"]
    assert result.metrics["test"]["accuracy"] == metrics["test"]["accuracy"]


def test_image_model_reloads_in_timm(tiny_timm_dir, image_folder_data, tmp_path):
    import timm
    import torch
    from transformers import AutoModelForImageClassification

    out = tmp_path / "run"
    finetune(image_recipe(tiny_timm_dir, image_folder_data, out, training={"num_train_epochs": 1}))
    timm_model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    wrapped = AutoModelForImageClassification.from_pretrained(out).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(timm_model(pixels), wrapped(pixel_values=pixels).logits, atol=1e-5)


def test_text_run_pipeline_matches_evaluation(tiny_bert_dir, text_csv_data, tmp_path):
    import pandas as pd
    from transformers import pipeline

    out = tmp_path / "run"
    finetune(text_recipe(tiny_bert_dir, text_csv_data, out))
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    test = pd.read_csv(text_csv_data / "test.csv")
    classifier = pipeline("text-classification", model=str(out))
    predicted = [p["label"] for p in classifier(list(test["text"]))]
    names = metrics["labels"]
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for t, p in zip(test["label"], predicted):
        matrix[names.index(t), names.index(p)] += 1
    assert matrix.tolist() == metrics["test"]["confusion_matrix"]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("modality", ["image", "text"])
def test_every_strategy_trains_end_to_end(strategy, modality, tiny_timm_dir, tiny_bert_dir, image_folder_data,
                                         text_csv_data, tmp_path):
    import torch
    from safetensors.torch import load_file

    make, model_dir, data_dir = ((image_recipe, tiny_timm_dir, image_folder_data) if modality == "image"
                                 else (text_recipe, tiny_bert_dir, text_csv_data))
    out = tmp_path / "run"
    # keep the last weights: "best" could be an epoch before gradual_unfreeze opened the backbone
    recipe = make(model_dir, data_dir, out, strategy={"name": strategy, **STRATEGY_OPTIONS.get(strategy, {})},
                  training={"load_best_model_at_end": False})
    result = finetune(recipe)
    test = result.metrics["test"]
    matrix = np.array(test["confusion_matrix"])  # the reported accuracy is the one the predictions give
    assert matrix.sum() == test["num_samples"] > 0 and test["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    def weights(folder: Path) -> dict:  # timm's key names, with or without transformers' wrapper prefix
        return {k.removeprefix("timm_model."): v for k, v in load_file(folder / "model.safetensors").items()}

    trained, source = weights(out), weights(model_dir)
    changed = {k for k, v in trained.items() if k in source and v.shape == source[k].shape
               and v.dtype.is_floating_point and not torch.equal(v, source[k])}
    head = {k for k in trained if "classifier" in k or ".pooler." in k}  # BERT's pooler is part of the head
    backbone_changed = changed - head
    if strategy == "linear_probe":
        assert not backbone_changed, f"frozen backbone changed: {sorted(backbone_changed)[:3]}"
    else:
        assert backbone_changed


def test_finished_run_is_not_overwritten_unless_asked(tiny_bert_dir, text_csv_data, tmp_path):
    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert_dir, text_csv_data, out, training={"num_train_epochs": 1})
    finetune(recipe)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="finished run"):
        finetune(recipe)
    assert (out / "model.safetensors").read_bytes() == before
    finetune(recipe.replace({"output.overwrite": True, "training.seed": 7}))
    assert (out / "model.safetensors").read_bytes() != before


def test_interrupted_run_resumes_to_the_same_result(tiny_bert_dir, text_csv_data, tmp_path):
    """Remove the last checkpoint and the final outputs of a finished run: the rerun resumes and matches."""
    out = tmp_path / "run"
    recipe = text_recipe(tiny_bert_dir, text_csv_data, out,
                         training={"num_train_epochs": 3, "save_total_limit": None},
                         output={"keep_checkpoints": True})
    reference = finetune(recipe).metrics
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 3
    shutil.rmtree(checkpoints[-1])
    for name in ("metrics.json", "model.safetensors", "README.md"):
        (out / name).unlink()
    resumed = finetune(recipe).metrics
    assert resumed["train"]["steps"] == reference["train"]["steps"]
    assert resumed["test"]["confusion_matrix"] == reference["test"]["confusion_matrix"]
    assert resumed["validation"]["loss"] == pytest.approx(reference["validation"]["loss"], rel=1e-5)


def test_compare_to_scratch_reports_the_transfer_gain(tiny_timm_dir, image_folder_data, tmp_path):
    out = tmp_path / "run"
    recipe = image_recipe(tiny_timm_dir, image_folder_data, out, training={"num_train_epochs": 1},
                          evaluation={"compare_to_scratch": True})
    metrics = finetune(recipe).metrics
    assert (out / "scratch" / "metrics.json").is_file()
    gain = metrics["transfer_gain"]["accuracy"]
    assert gain == pytest.approx(metrics["test"]["accuracy"] - metrics["scratch"]["test"]["accuracy"])
    assert "from scratch" in (out / "README.md").read_text().lower()
