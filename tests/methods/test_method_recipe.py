"""The recipe's ``method`` section: registry lookup, option validation, round trip."""

from __future__ import annotations

import pytest

from hf_transfer import Recipe
from hf_transfer.errors import RecipeError
from hf_transfer.methods import METHODS

BASE = {"task": "image-classification", "model": {"name_or_path": "org/model"}, "data": {"path": "sklearn:digits"}}


def recipe(**sections) -> Recipe:
    return Recipe.from_dict({**BASE, **sections})


def test_registry_holds_the_documented_methods():
    assert {"l2sp", "distillation", "dann"} <= set(METHODS)
    assert all(cls.name == name for name, cls in METHODS.items())


def test_no_method_by_default_and_in_yaml():
    plain = recipe()
    assert plain.method.name is None
    assert plain.to_dict()["method"] is None
    assert Recipe.from_dict(plain.to_dict()) == plain


@pytest.mark.parametrize("section", [
    {"name": "l2sp", "alpha": 0.5, "beta": 0.0},
    {"name": "distillation", "teacher": "runs/teacher", "alpha": 0.7, "temperature": 4},
    {"name": "dann", "target": {"path": "sklearn:digits-inverted", "max_train_samples": 50},
     "adversarial_weight": 0.3, "target_labelled_per_class": 2},
])
def test_resolved_method_round_trips_through_yaml(section, tmp_path):
    original = recipe(method=section)
    path = tmp_path / "r.yaml"
    path.write_text(original.to_yaml())
    again = Recipe.from_yaml(path)
    assert again.method == original.method
    assert again.method.name == section["name"]


def test_options_are_typed_and_overridable():
    parsed = recipe(method={"name": "l2sp"}).replace(["method.alpha=0.25"])
    assert parsed.method.options.alpha == 0.25 and parsed.method.options.beta == 0.01


def test_unknown_option_names_the_field_with_a_hint():
    with pytest.raises(RecipeError, match=r"Unknown key 'method.alpah'. Did you mean 'alpha'\?"):
        recipe(method={"name": "l2sp", "alpah": 0.1})


def test_unknown_target_data_key_names_the_nested_field():
    with pytest.raises(RecipeError, match=r"'method.target.max_train_sample'. Did you mean 'max_train_samples'"):
        recipe(method={"name": "dann", "target": {"path": "x", "max_train_sample": 3}})


def test_unknown_method_name_suggests_the_closest():
    with pytest.raises(RecipeError, match=r"Unknown method 'l2-sp'. Did you mean 'l2sp'\?"):
        recipe(method={"name": "l2-sp"})


@pytest.mark.parametrize("section, message", [
    ({"name": "distillation"}, "Missing required field 'method.teacher'"),
    ({"name": "dann"}, "Missing required field 'method.target'"),
    ({"name": "distillation", "teacher": "t", "alpha": 1.5}, "'method.alpha' must be in"),
    ({"name": "distillation", "teacher": "t", "temperature": 0}, "'method.temperature' must be > 0"),
    ({"name": "l2sp", "beta": -1}, "'method.beta' must be >= 0"),
    ({"name": "dann", "target": {"path": "x"}, "adversarial_weight": -1}, "'method.adversarial_weight'"),
    ({"alpha": 0.1}, "'method.name' is missing"),
])
def test_invalid_method_options_are_clear_errors(section, message):
    with pytest.raises(RecipeError, match=message):
        recipe(method=section)


def test_methods_needing_clean_inputs_reject_mixup():
    data = {**BASE["data"], "augmentation": {"mixup_alpha": 0.2}}
    with pytest.raises(RecipeError, match="distillation does not combine with mixup"):
        recipe(data=data, method={"name": "distillation", "teacher": "t"})
    assert recipe(data=data, method={"name": "l2sp"}).method.name == "l2sp"
