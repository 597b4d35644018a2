"""config_utils: dataclasses from plain dicts, with errors that name the dotted field."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hf_transfer.config_utils import apply_override, closest, coerce, from_dict, to_dict, unknown_key_error
from hf_transfer.errors import RecipeError


@dataclass
class Inner:
    size: int = 3
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    path: str
    rate: float = 0.1
    flag: bool = False
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_closest_finds_near_miss_and_nothing_for_unrelated():
    assert closest("learning_rte", ["learning_rate", "seed"]) == "learning_rate"
    assert closest("zzzz", ["learning_rate", "seed"]) is None


def test_unknown_key_error_names_dotted_key_and_suggestion():
    error = unknown_key_error("sise", "outer.inner.", ["size", "names"])
    assert "'outer.inner.sise'" in str(error)
    assert "Did you mean 'size'?" in str(error)
    assert "names, size" in str(error)


def test_from_dict_builds_nested_dataclass():
    obj = from_dict(Outer, {"path": "p", "rate": "0.5", "flag": "yes", "inner": {"size": "4", "names": "a, b"}})
    assert obj == Outer(path="p", rate=0.5, flag=True, inner=Inner(size=4, names=["a", "b"]))


def test_unknown_nested_key_names_full_path_and_close_match():
    with pytest.raises(RecipeError, match=r"Unknown key 'data\.inner\.sizes'.*Did you mean 'size'"):
        from_dict(Outer, {"path": "p", "inner": {"sizes": 2}}, "data.")


def test_missing_required_field_is_named():
    with pytest.raises(RecipeError, match=r"Missing required field 'data\.path'"):
        from_dict(Outer, {"rate": 0.2}, "data.")


@pytest.mark.parametrize(("value", "annotation", "message"), [
    ("many", int, "must be an integer"),
    (2.5, int, "must be an integer"),
    (True, int, "must be an integer"),
    ("fast", float, "must be a number"),
    (["a", "b"], str, "must be a string"),
    ({"a": 1}, str, "must be a string"),
    ("maybe", bool, "must be true or false"),
    (5, list[int], "must be a list"),
    ([1], dict, "must be a mapping"),
])
def test_coerce_rejects_wrong_types_naming_the_field(value, annotation, message):
    with pytest.raises(RecipeError, match=message) as info:
        coerce(value, annotation, "section.field")
    assert "'section.field'" in str(info.value)


def test_coerce_optional_and_numbers_from_strings():
    assert coerce(None, int | None, "f") is None
    assert coerce("3e-5", float, "f") == pytest.approx(3e-5)
    assert coerce("64", int | None, "f") == 64
    assert coerce(64.0, int, "f") == 64
    with pytest.raises(RecipeError, match="'f' must be an integer"):
        coerce("abc", int | None, "f")


def test_coerce_list_items_are_named_by_index():
    with pytest.raises(RecipeError, match=r"'f\[1\]' must be a number"):
        coerce([0.1, "x"], list[float], "f")


def test_to_dict_turns_tuples_into_lists():
    assert to_dict(Inner(size=1, names=("a",))) == {"size": 1, "names": ["a"]}


def test_apply_override_parses_yaml_values_and_creates_sections():
    tree: dict = {"training": {"seed": 1}}
    apply_override(tree, "training.learning_rate=3e-5")
    apply_override(tree, "data.image_size=64")
    apply_override(tree, "data.augmentation.hflip=0")
    apply_override(tree, "output.tags=[a, b]")
    apply_override(tree, "output.overwrite=true")
    assert tree["training"] == {"seed": 1, "learning_rate": 3e-5}
    assert isinstance(tree["training"]["learning_rate"], float)
    assert tree["data"] == {"image_size": 64, "augmentation": {"hflip": 0}}
    assert tree["output"] == {"tags": ["a", "b"], "overwrite": True}


@pytest.mark.parametrize("bad", ["training.learning_rate", "=3"])
def test_apply_override_rejects_malformed_assignments(bad):
    with pytest.raises(RecipeError, match="Override"):
        apply_override({}, bad)


def test_apply_override_into_a_value_is_an_error():
    with pytest.raises(RecipeError, match="'task' is a value, not a section"):
        apply_override({"task": "image-classification"}, "task.name=x")
