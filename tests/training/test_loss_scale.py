"""The training loss is a mean over the examples of an optimizer step, with or without gradient accumulation.

transformers' Trainer assumes a model whose ``forward`` takes ``**kwargs`` normalises its loss by the number of
labels of the whole accumulated batch; classification heads compute a plain batch mean, so the Trainer would then
skip the division by the accumulation steps (and multiply by the number of processes)."""

from __future__ import annotations

import json

from hf_transfer import Recipe, finetune


def first_loss(model, data, out, **training) -> float:
    recipe = Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(model)},
        "data": {"path": str(data), "max_length": 16},
        "training": {"num_train_epochs": 1, "learning_rate": 1e-9, "logging_steps": 1, "disable_tqdm": True,
                     "seed": 0, "data_seed": 0, **training},
        "output": {"dir": str(out)}})
    finetune(recipe)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return next(entry["loss"] for entry in history if "loss" in entry)


def test_gradient_accumulation_reports_and_trains_on_the_mean_loss(tiny_bert_dir, text_csv_data, tmp_path):
    whole = first_loss(tiny_bert_dir, text_csv_data, tmp_path / "one", per_device_train_batch_size=8)
    accumulated = first_loss(tiny_bert_dir, text_csv_data, tmp_path / "two", per_device_train_batch_size=4,
                             gradient_accumulation_steps=2)
    assert abs(accumulated - whole) < 0.05 * whole, (whole, accumulated)  # not twice the loss
