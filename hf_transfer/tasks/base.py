"""A task adapter binds a modality (images, text) to the shared recipe engine.

The engine never branches on the modality: it asks the adapter for the model, the
preprocessed splits, the collator and how to save the preprocessing next to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from datasets import Dataset
from transformers import PreTrainedModel

from ..data.prepare import PreparedData
from ..recipe import Recipe


@dataclass
class ModelInputs:
    """Preprocessed splits and the collator that batches them."""

    train: Dataset
    validation: Dataset
    test: Dataset | None
    collator: Callable
    mixup: Callable | None = None
    """Batch-level mixing (timm ``Mixup``) applied to training batches in the loss."""
    eval_decodes: bool = False
    """Evaluation examples are decoded on every access (images), so keeping them in memory pays."""


class TaskAdapter(Protocol):
    name: ClassVar[str]
    pipeline_tag: ClassVar[str]
    input_roles: ClassVar[tuple[str, ...]]
    training_defaults: ClassVar[dict[str, Any]]

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        """The model with a new head for ``label_names``, and its processor (tokenizer / image config)."""

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        """Lazy or cached preprocessing of the prepared splits."""

    def save_processor(self, processor: Any, model: PreTrainedModel, directory: Path) -> None:
        """Write what ``pipeline(...)`` needs besides config and weights."""


TASK_ADAPTERS: dict[str, TaskAdapter] = {}


def register_task(cls):
    TASK_ADAPTERS[cls.name] = cls()
    return cls


def get_task(name: str) -> TaskAdapter:
    from . import image, text  # noqa: F401  (registration)

    return TASK_ADAPTERS[name]


def label_maps(label_names: list[str]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
