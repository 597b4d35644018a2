"""Stages: inheritance between stage recipes, what each carry mode takes, and a tiny two-stage run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_transfer import Recipe, finetune
from hf_transfer.errors import RecipeError
from hf_transfer.runs.carry import write_initial_weights
from hf_transfer.runs.stages import run_recipes
from hf_transfer.tasks.base import get_task

TRAINING = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 5e-3,
            "dataloader_num_workers": 0, "logging_steps": 1, "disable_tqdm": True}


def staged(model_dir: Path, data_dir: Path, out: Path, transfer: dict | None = None, **target) -> dict:
    return {
        "task": "image-classification", "name": "chain", "model": {"name_or_path": str(model_dir)},
        "data": {"path": str(data_dir), "image_size": 32, "augmentation": {"random_resized_crop": False}},
        "strategy": {"name": "layerwise_lr", "layer_decay": 0.5}, "training": TRAINING, "output": {"dir": str(out)},
        "stages": [{"name": "source", "data": {"augmentation": {"hflip": 0.0, "vflip": 0.3}}},
                   {"name": "target", "transfer": transfer or {"carry": "all"}, **target}]}


def test_stages_inherit_sections_and_take_list_index_overrides(tiny_timm_dir, image_folder_data, tmp_path):
    tree = staged(tiny_timm_dir, image_folder_data, tmp_path / "run", strategy={"name": "full"},
                  data={"samples_per_class": 5}, training={"learning_rate": 1e-3})
    recipe = Recipe.from_dict(tree, ["stages.1.data.max_eval_samples=3", "stages.0.training.seed=7"])
    source, target = (stage.recipe for stage in recipe.stages)
    assert source.data.augmentation.vflip == 0.3 and target.data.augmentation.vflip == 0.3  # inherited
    assert target.data.samples_per_class == 5 and source.data.samples_per_class is None
    assert target.data.max_eval_samples == 3 and target.training["seed"] == 7  # seed inherited from stage 0
    assert source.strategy.options.layer_decay == 0.5 and target.strategy.name == "full"  # replaced, not merged
    assert target.training["learning_rate"] == 1e-3 and target.training["num_train_epochs"] == 1
    assert source.output.dir == str(tmp_path / "run" / "stages" / "source")
    assert target.output.dir == recipe.output.dir == str(tmp_path / "run")
    assert recipe.data.samples_per_class == 5  # the recipe's own sections are the last stage's
    assert Recipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()  # resolved recipe.yaml round-trips
    with pytest.raises(RecipeError, match=r"'stages' is a list of 2; '5' is not an index"):
        Recipe.from_dict(tree, ["stages.5.data.path=x"])


@pytest.mark.parametrize(("change", "message"), [
    ({"transfer": {"carry": "backbone"}}, "up_to"),
    ({"transfer": {"carry": "everything"}}, "stages.1.transfer.carry"),
    ({"model": {"name_or_path": "other"}}, "stages.1.model.name_or_path"),
    ({"data": {"max_train_samples": -1}}, r"stages.1 \(target\): 'data.max_train_samples'"),
    ({"transfer": {"carry": "augmentation"}, "model": {"name_or_path": "auto", "candidates": ["a", "b"]}},
     r"'stages.1' \(target\): model.name_or_path: auto is not supported inside stages"),
])
def test_bad_stage_fragments_name_the_field(tiny_timm_dir, image_folder_data, tmp_path, change, message):
    tree = staged(tiny_timm_dir, image_folder_data, tmp_path)
    tree["stages"][1].update(change)
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(tree)


def _initial_state(model_dir: Path, data_dir: Path, tmp_path: Path, transfer: dict) -> tuple[dict, dict]:
    recipe = Recipe.from_dict(staged(model_dir, data_dir, tmp_path / "run", transfer))
    target = run_recipes(recipe)[1]
    destination = tmp_path / "initial"
    write_initial_weights(get_task("image-classification"), target.replace({"model.name_or_path": str(model_dir)}),
                          ["blue", "green", "red"], ["a", "b"], transfer["carry"], transfer.get("up_to"),
                          "stages.1.transfer.up_to", destination)
    return _state(model_dir), _state(destination)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    """Weights by timm's own names (the fixture keeps the wrapper's ``timm_model.`` prefix, outputs do not)."""
    return {k.removeprefix("timm_model."): v for k, v in load_file(folder / "model.safetensors").items()}


def test_carry_all_keeps_every_backbone_weight_and_starts_a_new_head(tiny_timm_dir, image_folder_data, tmp_path):
    source, initial = _initial_state(tiny_timm_dir, image_folder_data, tmp_path, {"carry": "all"})
    assert initial["classifier.weight"].shape[0] == 2 and source["classifier.weight"].shape[0] == 3
    backbone = [key for key in source if not key.startswith("classifier.")]
    assert backbone and all(torch.equal(source[key], initial[key]) for key in backbone)


def test_carry_backbone_stops_at_the_named_block(tiny_timm_dir, image_folder_data, tmp_path):
    source, initial = _initial_state(tiny_timm_dir, image_folder_data, tmp_path,
                                     {"carry": "backbone", "up_to": "blocks.1"})
    same = {key for key in source if key in initial and torch.equal(source[key], initial[key])}
    assert "conv_stem.weight" in same and any(k.startswith("blocks.1.") and k.endswith("weight") for k in same)
    later = [k for k in source if k.startswith(("blocks.2.", "conv_head.")) and source[k].dim() > 1]  # convs
    assert later and not any(k in same for k in later)


def test_carry_backbone_with_an_unknown_layer_name_fails_before_training(tiny_timm_dir, image_folder_data, tmp_path):
    recipe = Recipe.from_dict(staged(tiny_timm_dir, image_folder_data, tmp_path / "run",
                                     {"carry": "backbone", "up_to": "blocks.9"}))
    with pytest.raises(RecipeError, match=r"'stages.1.transfer.up_to' = 'blocks.9' matches no backbone parameter"):
        finetune(recipe)
    assert not (tmp_path / "run" / "stages" / "source" / "metrics.json").exists()


def test_carry_architecture_gives_fresh_weights_of_the_same_shapes(tiny_timm_dir, image_folder_data, tmp_path):
    recipe = Recipe.from_dict(staged(tiny_timm_dir, image_folder_data, tmp_path / "run", {"carry": "architecture"}))
    target = run_recipes(recipe)[1].replace({"model.name_or_path": str(tiny_timm_dir)})
    assert not target.model.pretrained
    model, _ = get_task("image-classification").load_model(target, ["a", "b", "c"])
    source = _state(tiny_timm_dir)
    fresh = {k.removeprefix("timm_model."): v for k, v in model.state_dict().items()}
    weights = [k for k in source if k.endswith(".weight") and source[k].dim() > 1]
    assert all(fresh[k].shape == source[k].shape for k in weights)
    assert not any(torch.equal(fresh[k], source[k]) for k in weights)


def test_carry_augmentation_takes_the_source_policy_and_the_own_model(tiny_timm_dir, image_folder_data, tmp_path):
    tree = staged(tiny_timm_dir, image_folder_data, tmp_path / "run", {"carry": "augmentation"},
                  data={"augmentation": {"vflip": 0.0, "hflip": 0.9}})
    target = run_recipes(Recipe.from_dict(tree))[1]
    assert target.data.augmentation.vflip == 0.3 and target.data.augmentation.hflip == 0.0
    assert target.model.name_or_path == str(tiny_timm_dir) and target.model.pretrained


def test_two_stage_run_writes_lineage_and_forgetting_and_resumes(tiny_timm_dir, image_folder_data, tmp_path):
    out = tmp_path / "run"
    tree = staged(tiny_timm_dir, image_folder_data, out, data={"samples_per_class": 6})
    result = finetune(Recipe.from_dict(tree))
    source_dir = out / "stages" / "source"
    source_metrics = json.loads((source_dir / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["source", "target"]
    assert metrics["stages"][1]["carry"] == "all" and metrics["stages"][1]["metrics"]["test"]["accuracy"] == \
        metrics["test"]["accuracy"]
    forgetting = metrics["forgetting"]
    assert forgetting["accuracy_before"] == source_metrics["test"]["accuracy"]
    assert 0 <= forgetting["accuracy_after"] <= 1 and forgetting["num_samples"] == 12
    card = (out / "README.md").read_text()
    assert "## Lineage" in card and "Forgetting" in card
    assert (out / "stages.yaml").is_file() and result.output_dir == out
    # the mechanism: the source's own backbone under its own head scores exactly the source stage's accuracy
    from hf_transfer.runs.forgetting import source_forgetting

    source_recipe = Recipe.from_yaml(source_dir / "recipe.yaml")
    own, _ = get_task("image-classification").load_model(
        source_recipe.replace({"model.name_or_path": str(source_dir)}), source_metrics["labels"])
    assert source_forgetting(source_recipe, source_dir, source_metrics, own)["accuracy_change"] == 0
    # a run stopped before its last stage finished resumes there, leaving the finished source stage alone
    (out / "metrics.json").unlink()
    stamp = (source_dir / "metrics.json").stat().st_mtime_ns
    again = finetune(Recipe.from_dict(tree))
    assert (source_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert again.metrics["stages"][0]["metrics"] == metrics["stages"][0]["metrics"]
