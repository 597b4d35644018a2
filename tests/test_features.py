"""The frozen-feature cache: same results as the full model, reused across runs, off when it must be."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from hf_transfer import finetune
from hf_transfer.features import (FirstTokenHead, TimmPooledHead, adapter_reproduces_model, backbone_digest,
                                  cached_features, head_adapter_for)
from hf_transfer.models.layout import discover_layout

from test_end_to_end import image_recipe, text_recipe

NO_AUGMENTATION = {"augmentation": {"random_resized_crop": False, "hflip": 0.0}}


@pytest.fixture
def timm_model(tiny_timm_dir):
    from transformers import TimmWrapperForImageClassification

    torch.manual_seed(0)
    return TimmWrapperForImageClassification.from_pretrained(tiny_timm_dir).eval()


@pytest.fixture
def bert_model(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(directory))
    return directory / "features"


def test_adapters_reproduce_the_models_logits(timm_model, bert_model):
    assert isinstance(head_adapter_for(timm_model), TimmPooledHead)
    assert isinstance(head_adapter_for(bert_model), FirstTokenHead)
    pixels = {"pixel_values": torch.randn(2, 3, 32, 32)}
    tokens = {"input_ids": torch.tensor([[2, 7, 9, 3, 0], [2, 8, 3, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])}
    assert adapter_reproduces_model(timm_model, TimmPooledHead(), pixels)
    assert adapter_reproduces_model(bert_model, FirstTokenHead(), tokens)
    assert not adapter_reproduces_model(bert_model, TimmPooledHead(), tokens)


def test_backbone_digest_ignores_the_head_but_not_the_backbone(timm_model):
    layout = discover_layout(timm_model)
    before = backbone_digest(timm_model, layout.head)
    with torch.no_grad():
        timm_model.get_parameter(layout.head[0]).add_(1.0)
    assert backbone_digest(timm_model, layout.head) == before
    with torch.no_grad():
        timm_model.get_parameter(layout.backbone()[0]).add_(1.0)
    assert backbone_digest(timm_model, layout.head) != before


def test_an_unreadable_cache_file_is_computed_again(tmp_path, caplog):
    (tmp_path / "k.safetensors").write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        features, hit = cached_features("k", lambda: torch.ones(3, 2), tmp_path)
    assert not hit and torch.equal(features, torch.ones(3, 2)) and "unreadable" in caplog.text
    again, hit = cached_features("k", lambda: torch.zeros(3, 2), tmp_path)
    assert hit and torch.equal(again, torch.ones(3, 2))


def test_text_linear_probe_reuses_features_and_saves_a_model_pipeline_agrees_with(
        tiny_bert_dir, text_csv_data, tmp_path, cache, monkeypatch):
    import pandas as pd
    from transformers import pipeline

    import hf_transfer.features as features

    first = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "a", strategy="linear_probe")).metrics
    assert first["feature_cache"]["hits"] == {"train": False, "validation": False, "test": False}
    assert len(list(cache.glob("*.safetensors"))) == 3
    checks = []
    monkeypatch.setattr(features, "adapter_reproduces_model", lambda *a: checks.append(a) or True)
    second = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "b", strategy="linear_probe")).metrics
    assert second["feature_cache"]["hits"] == {"train": True, "validation": True, "test": True}
    assert second["test"]["confusion_matrix"] == first["test"]["confusion_matrix"]
    assert second["validation"]["loss"] == pytest.approx(first["validation"]["loss"], rel=1e-6)
    assert checks == []  # the adapter was checked on this backbone by the first run

    test = pd.read_csv(text_csv_data / "test.csv")
    predicted = [p["label"] for p in pipeline("text-classification", model=str(tmp_path / "b"))(list(test["text"]))]
    names = second["labels"]
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for truth, label in zip(test["label"], predicted):
        matrix[names.index(truth), names.index(label)] += 1
    assert matrix.tolist() == second["test"]["confusion_matrix"]


def test_image_linear_probe_matches_the_uncached_run(tiny_timm_dir, image_folder_data, tmp_path, cache):
    """Same seed, same head initialisation: training from cached features gives the same model."""
    common = {"strategy": "linear_probe", "data": NO_AUGMENTATION,
              "training": {"per_device_train_batch_size": 8, "learning_rate": 5e-2}}
    cached = finetune(image_recipe(tiny_timm_dir, image_folder_data, tmp_path / "cached", **common)).metrics
    plain = finetune(image_recipe(tiny_timm_dir, image_folder_data, tmp_path / "plain", strategy="linear_probe",
                                  data={**NO_AUGMENTATION, "feature_cache": False},
                                  training=common["training"])).metrics
    assert "feature_cache" in cached and "feature_cache" not in plain
    assert cached["test"]["confusion_matrix"] == plain["test"]["confusion_matrix"]
    assert cached["test"]["loss"] == pytest.approx(plain["test"]["loss"], rel=1e-3)
    again = finetune(image_recipe(tiny_timm_dir, image_folder_data, tmp_path / "again", **common)).metrics
    assert again["feature_cache"]["hits"]["train"] and not cached["feature_cache"]["hits"]["train"]
    assert again["test"]["loss"] == cached["test"]["loss"]  # extracting features does not change the run


def test_augmentation_turns_the_cache_off_and_says_why(tiny_timm_dir, image_folder_data, tmp_path, cache, caplog):
    with caplog.at_level(logging.INFO, logger="hf_transfer.features"):
        metrics = finetune(image_recipe(tiny_timm_dir, image_folder_data, tmp_path / "run", strategy="linear_probe",
                                        training={"num_train_epochs": 1})).metrics
    assert "feature_cache" not in metrics
    assert "Feature cache off: data.augmentation changes the input" in caplog.text
    assert not cache.exists()
    json.dumps(metrics)  # still a plain JSON report
