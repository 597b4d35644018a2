"""metrics.json says how many parameters a strategy trains, next to the whole model's count."""

from __future__ import annotations

import json

import pytest

from hf_transfer import Recipe, finetune


@pytest.mark.parametrize("strategy", ["full", "bitfit", "lora"])
def test_metrics_count_the_trained_and_all_parameters(strategy, tiny_bert_dir, text_csv_data, tmp_path):
    out = tmp_path / strategy
    finetune(Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 16}, "strategy": {"name": strategy},
        "training": {"num_train_epochs": 1, "disable_tqdm": True}, "output": {"dir": str(out)}}))
    counts = json.loads((out / "metrics.json").read_text())["parameters"]
    assert counts["total"] > 0
    if strategy == "full":
        assert counts["trainable"] == counts["total"]
    else:
        assert 0 < counts["trainable"] < counts["total"] / 2
