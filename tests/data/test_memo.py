"""Evaluation images are decoded once per run and kept in memory, within a budget, without changing results."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import Dataset

from hf_transfer import finetune
from hf_transfer.data.memo import MemoisedSplit
from hf_transfer.tasks.image import ImageBatchTransform

from test_end_to_end import image_recipe


def counting_split(size: int, calls: Counter, pixels: int = 4):
    def transform(batch):
        calls.update(batch["index"])
        return {"pixel_values": [torch.full((pixels,), i, dtype=torch.uint8) for i in batch["index"]],
                "labels": batch["index"]}

    return Dataset.from_dict({"index": list(range(size))}).with_transform(transform)


def test_examples_are_fetched_once_and_returned_unchanged():
    calls = Counter()
    memo = MemoisedSplit(counting_split(10, calls), budget_mb=1)
    first = memo.__getitems__([3, 1, 3])
    assert [e["labels"] for e in first] == [3, 1, 3]
    assert memo.__getitems__([1, 3, 4])[0]["pixel_values"].tolist() == [1] * 4
    assert calls == Counter({1: 1, 3: 1, 4: 1})  # 3 twice in one batch, 1 and 3 again later: fetched once
    assert len(memo) == 10 and memo[4]["labels"] == 4


def test_examples_past_the_budget_are_fetched_every_time():
    calls = Counter()
    memo = MemoisedSplit(counting_split(4, calls, pixels=2**19), budget_mb=1)  # two examples fit in 1 MB
    for _ in range(3):
        memo.__getitems__([0, 1, 2, 3])
    assert memo.used_bytes == 2**20
    assert calls == Counter({0: 1, 1: 1, 2: 3, 3: 3})


def test_a_run_decodes_validation_images_once_with_the_same_results(
        tiny_timm_dir, image_folder_data, tmp_path, monkeypatch):
    decoded = Counter()
    original = ImageBatchTransform.__call__

    def counting(self, batch):
        decoded[self.split_name] += len(batch[self.image_column])
        return original(self, batch)

    monkeypatch.setattr(ImageBatchTransform, "__call__", counting)
    results = {}
    for memory_mb in (0, 1024):
        decoded.clear()
        recipe = image_recipe(tiny_timm_dir, image_folder_data, tmp_path / str(memory_mb),
                              data={"eval_memory_mb": memory_mb}, training={"eval_strategy": "epoch", "seed": 0})
        results[memory_mb] = finetune(recipe).metrics["validation"]
        size = sum(map(sum, results[memory_mb]["confusion_matrix"]))
        # two epoch evaluations and the final report: three passes, only the first decoding when memoised
        assert decoded["validation"] == (size if memory_mb else 3 * size)
    assert results[1024]["confusion_matrix"] == results[0]["confusion_matrix"]
    assert results[1024]["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
