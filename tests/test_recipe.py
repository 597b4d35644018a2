"""Recipe: validation of every section before anything heavy is loaded."""

from __future__ import annotations

import copy

import pytest
import yaml

from hf_transfer.errors import RecipeError
from hf_transfer.recipe import Recipe

BASE = {
    "task": "image-classification",
    "model": {"name_or_path": "resnet18"},
    "data": {"path": "sklearn:digits"},
}


def recipe_dict(**sections) -> dict:
    data = copy.deepcopy(BASE)
    data.update(sections)
    return data


def test_minimal_recipe_gets_defaults():
    recipe = Recipe.from_dict(BASE)
    assert recipe.task == "image-classification"
    assert recipe.strategy.name == "full"
    assert recipe.data.validation_fraction == 0.1
    assert recipe.training == {}
    assert recipe.output.dir == "runs/run"


def test_unknown_top_level_section_suggests_close_match():
    with pytest.raises(RecipeError, match=r"Unknown key 'trainig'.*Did you mean 'training'"):
        Recipe.from_dict(recipe_dict(trainig={"seed": 1}))


def test_unknown_nested_key_names_dotted_path_and_suggestion():
    with pytest.raises(RecipeError, match=r"Unknown key 'data\.image_colum'.*Did you mean 'image_column'"):
        Recipe.from_dict(recipe_dict(data={"path": "x", "image_colum": "img"}))
    with pytest.raises(RecipeError, match=r"Unknown key 'data\.augmentation\.hflp'.*Did you mean 'hflip'"):
        Recipe.from_dict(recipe_dict(data={"path": "x", "augmentation": {"hflp": 0.5}}))


def test_string_for_int_names_the_field():
    with pytest.raises(RecipeError, match=r"'data\.max_train_samples' must be an integer; got 'many'"):
        Recipe.from_dict(recipe_dict(data={"path": "x", "max_train_samples": "many"}))


def test_list_for_str_names_the_field():
    with pytest.raises(RecipeError, match=r"'model\.name_or_path' must be a string"):
        Recipe.from_dict(recipe_dict(model={"name_or_path": ["a", "b"]}))
    with pytest.raises(RecipeError, match=r"'model\.revision' must be a string"):
        Recipe.from_dict(recipe_dict(model={"name_or_path": "m", "revision": ["main"]}))


def test_missing_model_name_or_path():
    with pytest.raises(RecipeError, match=r"Missing required field 'model\.name_or_path'"):
        Recipe.from_dict(recipe_dict(model={"pretrained": False}))


def test_missing_data_path():
    with pytest.raises(RecipeError, match=r"Missing required field 'data\.path'"):
        Recipe.from_dict(recipe_dict(data={"image_size": 64}))


@pytest.mark.parametrize("section", ["task", "model", "data"])
def test_missing_required_section(section):
    data = recipe_dict()
    del data[section]
    with pytest.raises(RecipeError, match=f"Missing required section '{section}'"):
        Recipe.from_dict(data)


def test_empty_strings_are_rejected():
    with pytest.raises(RecipeError, match=r"'model\.name_or_path' must not be empty"):
        Recipe.from_dict(recipe_dict(model={"name_or_path": "  "}))


def test_unknown_task_suggests_close_match():
    with pytest.raises(RecipeError, match=r"Unknown task 'image-classifcation'.*Did you mean 'image-classification'"):
        Recipe.from_dict(recipe_dict(task="image-classifcation"))


def test_overrides_like_set_on_the_command_line():
    recipe = Recipe.from_dict(BASE, ["training.learning_rate=3e-5", "data.image_size=64", "strategy.name=partial"])
    assert recipe.training["learning_rate"] == pytest.approx(3e-5)
    assert isinstance(recipe.training["learning_rate"], float)
    assert recipe.data.image_size == 64
    assert recipe.strategy.name == "partial"
    assert recipe.strategy.options.frozen_layers == 1
    assert "training" not in BASE  # the input dict is not modified


def test_override_with_unknown_key_is_reported_like_a_file_key():
    with pytest.raises(RecipeError, match=r"Unknown key 'data\.image_sise'.*Did you mean 'image_size'"):
        Recipe.from_dict(BASE, ["data.image_sise=64"])


def test_yaml_file_number_3e_5_is_a_float(tmp_path):
    """YAML 1.1 reads ``3e-5`` (no dot) as a string; recipes mean the number in every section."""
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(BASE) + "training:\n  learning_rate: 3e-5\n"
                    "strategy:\n  name: layerwise_lr\n  head_lr: 1e-3\n", encoding="utf-8")
    recipe = Recipe.from_yaml(path)
    assert recipe.strategy.options.head_lr == pytest.approx(1e-3)
    assert isinstance(recipe.training["learning_rate"], float), (
        f"training.learning_rate stayed {recipe.training['learning_rate']!r}; TrainingArguments and the "
        "optimizer then receive a string")
    assert recipe.training["learning_rate"] == pytest.approx(3e-5)


def test_unknown_strategy_suggests_close_match():
    with pytest.raises(RecipeError, match=r"Unknown strategy 'linear_prob'.*Did you mean 'linear_probe'.*Available"):
        Recipe.from_dict(recipe_dict(strategy={"name": "linear_prob"}))


def test_strategy_may_be_given_as_a_plain_name():
    assert Recipe.from_dict(recipe_dict(strategy="linear_probe")).strategy.name == "linear_probe"


def test_strategy_options_are_validated_per_strategy():
    recipe = Recipe.from_dict(recipe_dict(strategy={"name": "partial", "frozen_layers": 2}))
    assert recipe.strategy.options.frozen_layers == 2
    for name in ("full", "linear_probe", "layerwise_lr"):
        with pytest.raises(RecipeError, match=r"Unknown key 'strategy\.frozen_layers'"):
            Recipe.from_dict(recipe_dict(strategy={"name": name, "frozen_layers": 2}))


def test_strategy_option_typo_suggests_the_option():
    with pytest.raises(RecipeError, match=r"Unknown key 'strategy\.layer_decy'.*Did you mean 'layer_decay'"):
        Recipe.from_dict(recipe_dict(strategy={"name": "layerwise_lr", "layer_decy": 0.5}))


@pytest.mark.parametrize("strategy", [
    {"name": "partial", "frozen_layers": -1},
    {"name": "partial", "frozen_layers": "two"},
    {"name": "layerwise_lr", "layer_decay": 1.5},
    {"name": "layerwise_lr", "head_lr": 0},
    {"name": "gradual_unfreeze", "epochs_per_step": 0},
])
def test_impossible_strategy_options_are_rejected(strategy):
    with pytest.raises(RecipeError, match="strategy"):
        Recipe.from_dict(recipe_dict(strategy=strategy))


def test_training_unknown_key_suggests_trainingarguments_field():
    with pytest.raises(RecipeError, match=r"Unknown key 'training\.learning_rte'.*Did you mean 'learning_rate'"):
        Recipe.from_dict(recipe_dict(training={"learning_rte": 1e-4}))


def test_training_accepts_any_trainingarguments_field():
    recipe = Recipe.from_dict(recipe_dict(training={"gradient_checkpointing": True, "label_smoothing_factor": 0.1}))
    assert recipe.training["label_smoothing_factor"] == 0.1


@pytest.mark.parametrize("key", ["output_dir", "push_to_hub", "remove_unused_columns"])
def test_managed_training_keys_are_rejected(key):
    with pytest.raises(RecipeError, match=rf"'training\.{key}' is set by hf-transfer"):
        Recipe.from_dict(recipe_dict(training={key: "x"}))


@pytest.mark.parametrize("override", ["training.learning_rate=-1e-4", "training.learning_rate=0",
                                      "training.num_train_epochs=0", "training.per_device_train_batch_size=-2"])
def test_non_positive_training_values_rejected(override):
    with pytest.raises(RecipeError, match="must be > 0"):
        Recipe.from_dict(BASE, [override])


def test_absurd_learning_rate_rejected():
    with pytest.raises(RecipeError, match="far too large"):
        Recipe.from_dict(BASE, ["training.learning_rate=30"])


@pytest.mark.parametrize(("data", "message"), [
    ({"path": "x", "validation_fraction": 1.0}, "validation_fraction"),
    ({"path": "x", "image_size": 8}, "image_size"),
    ({"path": "x", "samples_per_class": 0}, "samples_per_class"),
    ({"path": "x", "augmentation": {"hflip": 2}}, "hflip"),
    ({"path": "x", "augmentation": {"scale": [0.5, 0.1]}}, "scale"),
])
def test_impossible_data_values_rejected(data, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(recipe_dict(data=data))


def test_push_to_hub_needs_model_id():
    with pytest.raises(RecipeError, match="hub_model_id"):
        Recipe.from_dict(recipe_dict(output={"push_to_hub": True}))


def test_yaml_round_trip_is_equal():
    recipe = Recipe.from_dict(recipe_dict(
        name="digits", strategy={"name": "layerwise_lr", "layer_decay": 0.5, "head_lr": 1e-3},
        training={"learning_rate": 3e-5, "num_train_epochs": 2},
        data={"path": "sklearn:digits", "image_size": 64, "augmentation": {"scale": [0.5, 1.0]}},
        evaluation={"compare_to_scratch": True, "scratch_overrides": {"training.learning_rate": 1e-3}},
        output={"tags": ["a", "b"], "keep_checkpoints": True}))
    again = Recipe.from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe
    assert again.to_yaml() == recipe.to_yaml()


def test_from_yaml_uses_file_stem_as_name_and_applies_overrides(tmp_path):
    path = tmp_path / "digits_probe.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    recipe = Recipe.from_yaml(path, ["strategy.name=linear_probe"])
    assert recipe.name == "digits_probe"
    assert recipe.output.dir == "runs/digits_probe"
    assert recipe.strategy.name == "linear_probe"


def test_from_yaml_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match="nope.yaml' does not exist"):
        Recipe.from_yaml(path)


def test_from_yaml_empty_file_names_it(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="empty.yaml' is empty"):
        Recipe.from_yaml(path)


def test_from_yaml_non_mapping_names_it(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- task\n- model\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="list.yaml' must hold a mapping"):
        Recipe.from_yaml(path)


def test_from_yaml_invalid_yaml_names_it(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: [unclosed\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="broken.yaml' is not valid YAML"):
        Recipe.from_yaml(path)


def test_from_yaml_errors_are_prefixed_with_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(data={"path": "x", "lable_column": "y"})), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"typo\.yaml: Unknown key 'data\.lable_column'.*'label_column'"):
        Recipe.from_yaml(path)


def test_replace_with_dict_and_list_returns_new_validated_recipe():
    recipe = Recipe.from_dict(BASE)
    changed = recipe.replace({"training.learning_rate": 3e-5, "strategy.name": "partial",
                              "output.tags": ["x", "y"], "model.pretrained": False})
    assert changed.training["learning_rate"] == pytest.approx(3e-5)
    assert changed.strategy.name == "partial"
    assert changed.output.tags == ["x", "y"]
    assert changed.model.pretrained is False
    assert recipe.training == {} and recipe.strategy.name == "full" and recipe.model.pretrained is True
    assert recipe.replace(["data.samples_per_class=5"]).data.samples_per_class == 5
    with pytest.raises(RecipeError, match="Did you mean 'learning_rate'"):
        recipe.replace({"training.learning_rat": 1e-3})


def test_replace_validates_each_changed_section_once_as_from_dict_does():
    recipe = Recipe.from_dict(BASE)
    auto = recipe.replace({"model.name_or_path": "auto", "model.candidates": ["a", "b"]})  # valid only together
    assert auto.model.is_auto and auto.model.candidates == ["a", "b"]
    with pytest.raises(RecipeError, match=r"'data\.augmentation\.hflip' is a probability in \[0, 1\]; got 2\.0"):
        recipe.replace({"data.augmentation": {"hflip": 2}})
    with pytest.raises(RecipeError, match=r"^Unknown key 'data\.augmentation\.hflp'\. Did you mean 'hflip'\?"):
        recipe.replace({"data.augmentation.hflp": 0.5})
    with pytest.raises(RecipeError, match=r"^'data\.max_train_samples' must be an integer; got 'many'\.$"):
        recipe.replace({"data.max_train_samples": "many"})
    with pytest.raises(RecipeError, match=r"does not combine with mixup"):
        recipe.replace({"method": {"name": "distillation", "teacher": "t"}, "data.augmentation.mixup_alpha": 0.2})
    with pytest.raises(RecipeError, match=r"^Unknown key 'foo'\."):
        recipe.replace({"foo.bar": 1})


def test_replace_copies_every_section():
    recipe = Recipe.from_dict(recipe_dict(training={"seed": 3}, data={"path": "x", "data_files": {"train": "a"}}))
    changed = recipe.replace({"training.learning_rate": 1e-3, "data.data_files.test": "b"})
    changed.output.tags.append("mine")
    assert recipe.training == {"seed": 3} and recipe.data.data_files == {"train": "a"} and recipe.output.tags == []
    assert changed.data.data_files == {"train": "a", "test": "b"}
    section = type(recipe.data.augmentation)(hflip=0.0)
    assert recipe.replace({"data.augmentation": section}).data.augmentation == section


def test_seed_is_typed_and_follows_training_seed():
    recipe = Recipe.from_dict(BASE)
    assert recipe.seed == 42
    assert recipe.replace({"training.seed": 7}).seed == 7


def test_a_task_registered_from_outside_is_a_valid_task(monkeypatch):
    from hf_transfer.registry import TASKS

    monkeypatch.setattr(TASKS, "_entries", dict(TASKS))

    @TASKS.register("tabular-classification")
    class Tabular:
        pass

    assert Recipe.from_dict(recipe_dict(task="tabular-classification")).task == "tabular-classification"
    with pytest.raises(RecipeError, match=r"Supported: image-classification, text-classification, .*"
                                          r"tabular-classification\.$"):
        Recipe.from_dict(recipe_dict(task="tabular"))
