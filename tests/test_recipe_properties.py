"""Property: any ``--set`` override either gives a valid Recipe or a RecipeError, never another exception."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_transfer.errors import HfTransferError
from hf_transfer.recipe import Recipe

BASE = {"task": "image-classification", "model": {"name_or_path": "resnet18"},
        "data": {"path": "sklearn:digits"}, "training": {"num_train_epochs": 1}}

REAL_KEYS = [
    "task", "name", "model", "model.name_or_path", "model.pretrained", "model.revision", "model.trust_remote_code",
    "data", "data.path", "data.validation_fraction", "data.test_fraction", "data.max_train_samples",
    "data.samples_per_class", "data.image_size", "data.crop_pct", "data.max_length", "data.on_bad_example",
    "data.data_files", "data.label_column", "data.augmentation.scale", "data.augmentation.hflip",
    "data.augmentation.mixup_alpha", "data.augmentation.auto_augment", "strategy", "strategy.name",
    "strategy.frozen_layers", "strategy.layer_decay", "strategy.head_epochs", "training",
    "training.learning_rate", "training.num_train_epochs", "training.per_device_train_batch_size",
    "training.weight_decay", "training.warmup_steps", "training.max_steps", "training.seed",
    "training.save_total_limit", "training.lr_scheduler_type", "training.bf16", "evaluation",
    "evaluation.compare_to_scratch", "evaluation.scratch_overrides", "evaluation.early_stopping_patience",
    "output", "output.dir", "output.overwrite", "output.push_to_hub", "output.hub_model_id", "output.tags",
]
MISSPELT = ["trainig.learning_rate", "data.imge_size", "training.learning_rte", "model.nme_or_path", "outptu.dir",
            "strategy.frozen_layer", "data.augmentation.hfilp", "evaluation.patience", "training.output_dir",
            "data..path", "..", ".", "a.b.c.d", "training.learning_rate.x", "data.path.sub"]

VALUES = st.one_of(
    st.sampled_from(["", "true", "no", "null", "~", "-1", "0", "1e400", "-1e-3", ".nan", ".inf", "-.inf", "3e-5",
                     "1e9", "2.5", "[1, 2]", "[0.5, 0.1]", "{a: 1}", "{1: 2}", "[", "{", ": :", "!!python/object:os.system x",
                     "'quoted'", "full", "linear_probe", "skip", "error", "image-classification", "&a [*a]", "*b",
                     "!!binary AAAA", "2020-01-01", "0x10", "1_000", "- a\n- b"]),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
OVERRIDES = st.lists(st.tuples(st.sampled_from(REAL_KEYS + MISSPELT), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
                     | st.text(max_size=20), max_size=4)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("props") / "base.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    return path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=OVERRIDES)
def test_overrides_give_a_recipe_or_a_recipe_error(recipe_file, overrides):
    try:
        recipe = Recipe.from_yaml(recipe_file, overrides)
    except HfTransferError as error:
        assert str(error).strip(), "an error without a message"
        return
    # a recipe that loads is consistent: it survives its own YAML round trip and has sane numbers
    again = Recipe.from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again.to_dict() == recipe.to_dict()
    learning_rate = recipe.training.get("learning_rate", 1e-4)
    assert 0 < float(learning_rate) < 10 and math.isfinite(float(learning_rate))
    assert 0 < recipe.data.validation_fraction < 1
    assert recipe.data.on_bad_example in ("error", "skip")
