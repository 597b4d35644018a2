"""Recipe ``training`` section -> TrainingArguments: defaults that follow from the machine and the data path."""

from __future__ import annotations

import pytest
import torch

from hf_transfer.errors import RecipeError
from hf_transfer.training.arguments import build_training_arguments


def test_recipe_values_override_defaults_and_managed_fields_are_set(tmp_path):
    args = build_training_arguments({"learning_rate": 1e-4}, tmp_path, {"learning_rate": 5e-4, "num_train_epochs": 2})
    assert args.learning_rate == 1e-4 and args.num_train_epochs == 2
    assert args.output_dir == str(tmp_path) and args.remove_unused_columns is False and args.push_to_hub is False


def test_pinned_memory_only_with_a_gpu_and_workers_persist(tmp_path):
    args = build_training_arguments({"dataloader_num_workers": 2}, tmp_path, {})
    assert args.dataloader_pin_memory == torch.cuda.is_available()
    assert args.dataloader_persistent_workers is True  # workers are not restarted at every epoch
    inline = build_training_arguments({"dataloader_num_workers": 0}, tmp_path, {})
    assert inline.dataloader_persistent_workers is False  # torch refuses persistent workers without workers
    chosen = build_training_arguments({"dataloader_num_workers": 2, "dataloader_persistent_workers": False}, tmp_path, {})
    assert chosen.dataloader_persistent_workers is False


def test_evaluation_and_saving_follow_each_other_when_the_best_model_is_kept(tmp_path):
    args = build_training_arguments({"eval_strategy": "steps", "eval_steps": 5}, tmp_path, {})
    assert args.save_strategy == "steps"


def test_impossible_combinations_are_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match="Invalid 'training' section"):
        build_training_arguments({"lr_scheduler_type": "no-such-schedule"}, tmp_path, {})


def test_bf16_by_default_only_where_it_pays(tmp_path, monkeypatch):
    import hf_transfer.training.arguments as arguments

    cpu = {"use_cpu": True}  # TrainingArguments accepts bf16 without a GPU only when told it runs on the CPU
    monkeypatch.setattr(arguments, "bf16_pays", lambda: False)
    assert build_training_arguments(cpu, tmp_path, {}).bf16 is False
    monkeypatch.setattr(arguments, "bf16_pays", lambda: True)
    assert build_training_arguments(cpu, tmp_path, {}).bf16 is True
    assert build_training_arguments({**cpu, "bf16": False}, tmp_path, {}).bf16 is False  # the recipe wins


def test_prediction_only_arguments_pin_memory_only_with_a_gpu(tmp_path):
    from hf_transfer.evaluation.predict import evaluation_arguments

    args = evaluation_arguments(tmp_path, 16)
    assert args.per_device_eval_batch_size == 16 and args.remove_unused_columns is False
    assert args.dataloader_pin_memory == torch.cuda.is_available() and args.report_to == []
