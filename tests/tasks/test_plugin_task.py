"""A third task registered from outside the package: numeric-feature rows (f0..f3) into a small MLP.

Nothing in ``hf_transfer`` knows this task; the adapter below and its registration are all it takes for
``finetune``, ``check``, ``evaluate`` and the model card to work on it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

import hf_transfer
from hf_transfer.cli import run_cli
from hf_transfer.data.prepare import LABEL, PreparedData
from hf_transfer.errors import ModelError
from hf_transfer.models.sources import MODEL_FIELD, resolve_model_source
from hf_transfer.models.weights import check_loading_info, where
from hf_transfer.recipe import Recipe
from hf_transfer.registry import TASKS
from hf_transfer.tasks.base import CardFacts, ModelInputs, TaskAdapter, get_task, label_maps

TASK = "numeric-classification"
FEATURES = ("f0", "f1", "f2", "f3")
CLASSES = ("low", "mid", "high")


class NumericMLPConfig(PretrainedConfig):
    model_type = "hf-transfer-test-mlp"

    def __init__(self, num_features: int = len(FEATURES), hidden_size: int = 16, num_layers: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.num_features, self.hidden_size, self.num_layers = num_features, hidden_size, num_layers


class NumericEncoder(nn.Module):
    def __init__(self, config: NumericMLPConfig) -> None:
        super().__init__()
        sizes = [config.num_features] + [config.hidden_size] * config.num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            features = torch.relu(layer(features))
        return features


class NumericMLPForSequenceClassification(PreTrainedModel):
    """An MLP backbone (``mlp``, layers in a ``ModuleList``) and a linear ``classifier`` head."""

    config_class = NumericMLPConfig
    base_model_prefix = "mlp"

    def __init__(self, config: NumericMLPConfig) -> None:
        super().__init__(config)
        self.mlp = NumericEncoder(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        logits = self.classifier(self.mlp(features))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(NumericMLPConfig.model_type, NumericMLPConfig, exist_ok=True)
AutoModelForSequenceClassification.register(NumericMLPConfig, NumericMLPForSequenceClassification, exist_ok=True)


def collate_features(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"features": torch.tensor([e["features"] for e in examples], dtype=torch.float32),
            "labels": torch.tensor([e[LABEL] for e in examples], dtype=torch.long)}


@TASKS.register(TASK)
class NumericClassification(TaskAdapter):
    """Each numeric column is an input role of its own, found by its name."""

    pipeline_tag: ClassVar[str] = "tabular-classification"
    input_roles: ClassVar[tuple[str, ...]] = FEATURES
    auto_class: ClassVar[type] = AutoModelForSequenceClassification

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        source = resolve_model_source(recipe.model.name_or_path, self)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source.location, num_labels=len(label_names), ignore_mismatched_sizes=True, output_loading_info=True,
            use_safetensors=True, **label_maps(label_names))
        check_loading_info(model, info, MODEL_FIELD, recipe.model.name_or_path)
        return model, None

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        columns = [data.columns[role] for role in self.input_roles]

        def rows(split: Dataset | None) -> Dataset | None:
            if split is None:
                return None
            return split.map(lambda batch: {"features": [list(map(float, row)) for row in
                                                         zip(*(batch[c] for c in columns))], LABEL: batch[LABEL]},
                             batched=True, remove_columns=split.column_names)

        return ModelInputs(train=rows(data.train), validation=rows(data.validation), test=rows(data.test),
                           collator=collate_features)

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None:
        if config.get("model_type") != NumericMLPConfig.model_type:
            raise ModelError(f"{where(field, name)} is not a numeric MLP.")

    def card_facts(self, recipe: Recipe) -> CardFacts:
        return CardFacts(pipeline_tag=self.pipeline_tag, tags=(self.name,), input_text="four numeric features",
                         how_to_use="Load with `AutoModelForSequenceClassification.from_pretrained(folder)`.\n")


def write_rows(path: Path, count: int, seed: int) -> None:
    """Class ``k`` has its features around ``2k``: easy to learn, so the metrics are meaningful."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "label"])
        for i in range(count):
            k = i % len(CLASSES)
            writer.writerow([*(round(float(v), 4) for v in rng.normal(2.0 * k, 0.3, len(FEATURES))), CLASSES[k]])


@pytest.fixture(scope="module")
def numeric_setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("numeric")
    data = root / "data"
    data.mkdir()
    write_rows(data / "train.csv", 90, seed=0)
    write_rows(data / "test.csv", 30, seed=1)
    backbone = root / "mlp-backbone"
    torch.manual_seed(0)
    NumericMLPForSequenceClassification(NumericMLPConfig(num_labels=2)).save_pretrained(backbone)
    return data, backbone


def numeric_recipe(data: Path, backbone: Path, output: Path) -> dict[str, Any]:
    return {"task": TASK, "name": "numeric", "model": {"name_or_path": str(backbone)}, "data": {"path": str(data)},
            "strategy": {"name": "full"},
            "training": {"num_train_epochs": 8, "learning_rate": 0.05, "per_device_train_batch_size": 16,
                         "disable_tqdm": True, "dataloader_num_workers": 0},
            "output": {"dir": str(output)}}


def test_the_registry_knows_the_plugin_task_and_suggests_names():
    assert isinstance(get_task(TASK), NumericClassification) and TASK in TASKS
    with pytest.raises(hf_transfer.RecipeError, match="Did you mean 'numeric-classification'"):
        get_task("numeric-clasification")


def test_check_finetune_evaluate_and_card_on_a_third_task(numeric_setup, tmp_path, capsys):
    data, backbone = numeric_setup
    output = tmp_path / "run"
    recipe_file = tmp_path / "numeric.yaml"
    recipe_file.write_text(json.dumps(numeric_recipe(data, backbone, output)))  # JSON is YAML

    assert run_cli(["check", str(recipe_file)]) == 0
    assert "f0" in capsys.readouterr().out

    result = hf_transfer.finetune(Recipe.from_yaml(recipe_file))
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == result.metrics["test"]["accuracy"] >= 0.9
    assert json.loads((output / "config.json").read_text())["model_type"] == NumericMLPConfig.model_type

    card = (output / "README.md").read_text()
    assert "pipeline_tag: tabular-classification" in card and TASK in card
    assert "A numeric classification model for 3 classes" in card and "four numeric features" in card

    report = hf_transfer.evaluate(output, str(data))
    assert report["accuracy"] == metrics["test"]["accuracy"] and report["num_samples"] == 30
