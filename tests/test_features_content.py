"""The feature cache keyed per example content: folds, re-splits and other splits holding the same examples read
their features back instead of extracting them again."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from datasets import Dataset, Features, Image

import hf_transfer.features as features
from hf_transfer import finetune
from hf_transfer.data.prepare import prepare_data
from hf_transfer.features import content_cached_features, example_digests
from hf_transfer.tasks.base import get_task

from test_end_to_end import image_recipe, text_recipe

NO_AUGMENTATION = {"augmentation": {"random_resized_crop": False, "hflip": 0.0}}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("HF_TRANSFER_CACHE", str(directory))
    return directory / "features"


@pytest.fixture()
def extracted(monkeypatch) -> list[int]:
    """Rows passed to the backbone, one entry per ``extract_features`` call."""
    calls: list[int] = []
    original = features.extract_features

    def counting(model, adapter, split, *args, **kwargs):
        calls.append(len(split))
        return original(model, adapter, split, *args, **kwargs)

    monkeypatch.setattr(features, "extract_features", counting)
    return calls


def test_digests_follow_the_inputs_not_the_split_or_the_label(tmp_path):
    first = Dataset.from_dict({"text": ["a b", "c", "a b"], "labels": [0, 1, 1]})
    other = Dataset.from_dict({"text": ["c", "a b", "d"], "labels": [0, 0, 0]})
    a, b = example_digests(first, ["text"]), example_digests(other, ["text"])
    assert a[0] == a[2] == b[1] and a[1] == b[0] and b[2] not in a  # the label does not count
    pairs = Dataset.from_dict({"text": ["a", "a b"], "pair": ["b c", "c"]})
    one, two = example_digests(pairs, ["text", "pair"])
    assert one != two  # ("a", "b c") and ("a b", "c") join to the same characters but are other inputs
    png = tmp_path / "x.png"
    from PIL import Image as PILImage

    PILImage.new("RGB", (4, 4), (200, 10, 10)).save(png)
    kind = Features({"image": Image()})
    by_bytes = Dataset.from_dict({"image": [{"bytes": png.read_bytes(), "path": None}]}, features=kind)
    by_path = Dataset.from_dict({"image": [{"bytes": None, "path": str(png)}]}, features=kind)
    assert example_digests(by_bytes, ["image"]) == example_digests(by_path, ["image"])  # the image's content


def test_only_examples_not_seen_before_are_computed(tmp_path):
    calls: list[list[int]] = []

    def compute(rows: list[int]) -> torch.Tensor:
        calls.append(rows)
        return torch.tensor([[float(values[i])] for i in rows])

    values = [1, 2, 3, 2]
    digests = [bytes([v]) * 16 for v in values]
    first, computed = content_cached_features("space", digests, compute, tmp_path)
    assert calls == [[0, 1, 2]] and computed == 3  # the repeated example once
    assert first.flatten().tolist() == [1.0, 2.0, 3.0, 2.0]
    values = [4, 3, 1, 4]
    second, computed = content_cached_features("space", [bytes([v]) * 16 for v in values], compute, tmp_path)
    assert calls[-1] == [0] and computed == 1 and second.flatten().tolist() == [4.0, 3.0, 1.0, 4.0]
    values = [2, 4]
    third, computed = content_cached_features("space", [bytes([v]) * 16 for v in values], compute, tmp_path)
    assert len(calls) == 2 and computed == 0 and third.flatten().tolist() == [2.0, 4.0]
    assert len(list(tmp_path.glob("space.*.safetensors"))) == 2 and not list(tmp_path.glob(".*"))
    _, computed = content_cached_features("other", [bytes([2]) * 16], compute, tmp_path)
    assert computed == 1  # another feature space (weights, preprocessing) shares nothing


def test_an_unreadable_shard_is_computed_again(tmp_path, caplog):
    digests = [bytes([7]) * 16]
    content_cached_features("space", digests, lambda rows: torch.ones(len(rows), 2), tmp_path)
    for shard in tmp_path.glob("space.*.safetensors"):
        shard.write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        again, computed = content_cached_features("space", digests, lambda rows: torch.zeros(len(rows), 2), tmp_path)
    assert computed == 1 and torch.equal(again, torch.zeros(1, 2)) and "unreadable" in caplog.text


def test_cross_validation_folds_after_the_first_extract_nothing(tiny_bert_dir, text_csv_data, tmp_path, cache,
                                                               extracted, caplog):
    recipe = text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "cv", strategy="linear_probe",
                         training={"num_train_epochs": 1}, evaluation={"cross_validate": 2})
    with caplog.at_level(logging.INFO, logger="hf_transfer.features"):
        finetune(recipe)
    folds = [json.loads((tmp_path / "cv" / "folds" / str(i) / "metrics.json").read_text())["feature_cache"]
             for i in range(2)]
    assert sum(folds[0]["computed"].values()) == 36 + 4 + 12  # every distinct example once (train, validation, test)
    assert folds[1]["computed"] == {"train": 0, "validation": 0, "test": 0}
    assert all(folds[1]["hits"].values())
    main = json.loads((tmp_path / "cv" / "metrics.json").read_text())["feature_cache"]
    assert main["computed"] == {"train": 0, "validation": 0, "test": 0}  # the model run too
    assert sum(extracted) <= 52 and caplog.text.count("nothing extracted") == 2


def test_a_resplit_reads_the_rows_it_has_seen_in_any_split(tiny_bert_dir, text_csv_data, tmp_path, cache, extracted):
    first = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "a", strategy="linear_probe",
                                 training={"num_train_epochs": 1})).metrics["feature_cache"]
    calls = len(extracted)
    resplit = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "b", strategy="linear_probe",
                                   data={"validation_fraction": 0.25},
                                   training={"num_train_epochs": 1})).metrics["feature_cache"]
    assert sum(first["computed"].values()) > 0 and resplit["computed"] == {"train": 0, "validation": 0, "test": 0}
    assert len(extracted) == calls  # the extractor was not called again


def test_image_training_rows_keep_features_of_their_own(tiny_timm_dir, image_folder_data, tmp_path, cache):
    """Images: training rows are resized whole, evaluation rows centre-cropped, so a row seen only in evaluation
    is extracted again when a re-split puts it in the training split (and never the other way round)."""
    common = {"strategy": "linear_probe", "data": NO_AUGMENTATION, "training": {"num_train_epochs": 1}}
    first_recipe = image_recipe(tiny_timm_dir, image_folder_data, tmp_path / "a", **common)
    second_recipe = image_recipe(tiny_timm_dir, image_folder_data, tmp_path / "b",
                                 **{**common, "training": {"num_train_epochs": 1, "seed": 7}})
    first = finetune(first_recipe).metrics["feature_cache"]
    second = finetune(second_recipe).metrics["feature_cache"]
    roles = get_task("image-classification").input_roles

    def rows(recipe, split):
        data = prepare_data(recipe.data, roles, recipe.seed)
        return set(example_digests(getattr(data, split), [data.columns["image"]]))

    new_train = rows(second_recipe, "train") - rows(first_recipe, "train")
    seen_in_evaluation = rows(first_recipe, "validation") | rows(first_recipe, "test")
    assert first["computed"]["train"] == 36 and new_train and second["computed"]["train"] == len(new_train)
    assert second["computed"]["validation"] == len(rows(second_recipe, "validation") - seen_in_evaluation)
    assert second["computed"]["test"] == 0


def test_texts_are_keyed_by_their_token_ids_so_another_budget_shares_the_uncut_ones(
        tiny_bert_dir, text_csv_data, tmp_path, cache):
    """``max_length`` is not in the key: a run with another token budget (``auto`` chooses one per fold) re-extracts
    only the texts it cuts differently."""
    first = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "a", strategy="linear_probe",
                                 training={"num_train_epochs": 1})).metrics["feature_cache"]
    wider = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "b", strategy="linear_probe",
                                 data={"max_length": 24}, training={"num_train_epochs": 1})).metrics["feature_cache"]
    cut = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "c", strategy="linear_probe",
                               data={"max_length": 8}, training={"num_train_epochs": 1})).metrics["feature_cache"]
    assert sum(first["computed"].values()) > 0
    assert wider["computed"] == {"train": 0, "validation": 0, "test": 0}  # no text is that long: same token ids
    assert 0 < sum(cut["computed"].values()) < sum(first["computed"].values())  # only the texts cut at 8 tokens
