"""A task adapter binds a modality (images, text, ...) to the shared recipe engine.

The engine never branches on the modality: it asks the adapter for the model, the preprocessed splits, the
collator, how to save the preprocessing next to the model, which saved models and teachers fit, what the
feature cache must key on and what the model card says. Adding a task is one ``TaskAdapter`` subclass
registered with ``@TASKS.register("my-task")``, inside the package or outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from datasets import Dataset, Features
from transformers import PreTrainedModel

from ..data.prepare import PreparedData
from ..errors import DataError, RecipeError
from ..models.sources import MODEL_FIELD, ModelSource, resolve_model_source
from ..recipe import Recipe
from ..registry import TASKS


@dataclass
class ModelInputs:
    """Preprocessed splits and the collator that batches them."""

    train: Dataset
    validation: Dataset
    test: Dataset | None
    collator: Callable
    mixup: Callable[[dict[str, Any]], tuple[dict[str, Any], Any]] | None = None
    """Batch-level mixing of training batches (e.g. timm ``Mixup``): a batch -> (model inputs, soft targets)."""
    eval_decodes: bool = False
    """Evaluation examples are decoded on every access (images), so keeping them in memory pays."""
    report: dict[str, Any] = field(default_factory=dict)
    """What the task measured of its inputs under this preprocessing (e.g. tokens per text and how many were
    cut), for the log and ``metrics.json`` (``inputs``)."""
    groups: dict[str, list[int]] = field(default_factory=dict)
    """Splits whose rows are parts of examples (windows of a long text): split name -> the example each row belongs
    to. Evaluation averages an example's logits over its rows; a split not named here has one row per example."""


@dataclass(frozen=True)
class CardFacts:
    """What the model card says about a task's model: Hub metadata, the input and the "how to use" section."""

    pipeline_tag: str
    library_name: str = "transformers"
    tags: tuple[str, ...] = ()
    input_text: str = ""
    """The **Input:** line of the card, e.g. the image size or the token limit."""
    how_to_use: str = ""
    """Markdown of the "How to use" section."""


def pipeline_usage(pipeline_tag: str, load_id: str, example_input: str) -> str:
    """The ``transformers.pipeline`` snippet of the card's "How to use" section."""
    return (f'```python\nfrom transformers import pipeline\n\nclassifier = pipeline("{pipeline_tag}", '
            f'model="{load_id}")\nprint(classifier({example_input}))\n```\n')


def load_id(recipe: Recipe) -> str:
    """Where a user loads the trained model from: the Hub repository if pushed, else the folder."""
    return recipe.output.hub_model_id or "path/to/this/folder"


class TaskAdapter:
    """Every fact about one modality. Subclasses implement ``load_model``, ``model_inputs`` and ``input_roles``;
    the other hooks have defaults that suit a task with nothing special to say."""

    name: ClassVar[str]
    pipeline_tag: ClassVar[str]
    input_roles: ClassVar[tuple[str, ...]]
    """Data column roles, passed to ``prepare_data`` (e.g. ``("text", "text_pair")``)."""
    training_defaults: ClassVar[dict[str, Any]] = {}
    """``TrainingArguments`` values this modality prefers when the recipe leaves them out."""
    auto_class: ClassVar[type | None] = None
    """The ``AutoModelFor...`` class that loads this task's classifiers (weight probe, teachers)."""
    example_input: ClassVar[str] = "..."
    """A Python literal the card's pipeline snippet classifies."""
    detected_by_default: ClassVar[bool] = False
    """``hf-transfer rank`` picks this task for data that no adapter's ``detect`` claims."""
    uses_channels_last: ClassVar[bool] = False
    """``model.channels_last`` changes how this task's models run (convolutions on image tensors)."""
    train_preprocessing_differs: ClassVar[tuple[str, ...]] = ()
    """Entries of ``preprocessing_identity`` whose training rows are preprocessed unlike evaluation rows even
    without augmentation: the feature cache keeps their training features apart from evaluation features."""
    row_captured_identity: ClassVar[tuple[str, ...]] = ()
    """Entries of ``preprocessing_identity`` that the stored model inputs already show (a text's token ids after
    truncation): the feature cache, which keys each example by those inputs, leaves them out of its key, so that
    runs choosing another token budget (``max_length: auto`` per fold) share every example it does not change."""

    # ------------------------------------------------------------------------------ recipe and sources

    def check_recipe(self, recipe: Recipe) -> None:
        """Reject recipe fields this task cannot use, before anything is loaded. A one-model task reads
        ``model.name_or_path`` only; the fields for several towers belong to ``image-text-classification``."""
        model = recipe.model
        towers = [name for name in ("image", "text") if getattr(model, name) is not None]
        if towers:
            raise RecipeError(f"'model.{towers[0]}' names a tower of an image-text-classification model; task "
                              f"'{self.name}' trains one model: set model.name_or_path instead.")
        if model.name_or_path is None:
            raise RecipeError("Missing required field 'model.name_or_path': name the pretrained model (a Hub id, a "
                              "local folder, a timm architecture or pypi:<name>).")
        if recipe.evaluation.compare_modalities:
            raise RecipeError(f"'evaluation.compare_modalities' compares the inputs of a task with several; task "
                              f"'{self.name}' has one. Remove it, or use compare_to_scratch.")
        if recipe.data.missing_modality != "error":
            raise RecipeError(f"'data.missing_modality' is for tasks with several inputs; task '{self.name}' reads "
                              "one. Use data.on_bad_example=skip to drop rows without it.")

    def model_references(self, recipe: Recipe) -> dict[str, str]:
        """The model references the recipe names, by recipe field (a task with several towers has several)."""
        return {MODEL_FIELD: recipe.model.name_or_path} if recipe.model.name_or_path else {}

    def resolve_sources(self, recipe: Recipe) -> dict[str, ModelSource]:
        """Where each reference points, checked on the way (``models.sources.resolve_model_source``)."""
        return {field: resolve_model_source(name, self, field) for field, name in self.model_references(recipe).items()}

    def base_models(self, recipe: Recipe) -> list[str]:
        """The pretrained models the run starts from, for the card's ``base_model``."""
        return list(self.model_references(recipe).values()) if recipe.model.pretrained else []

    def input_report(self, recipe: Recipe, data: PreparedData) -> dict[str, Any]:
        """``hf-transfer check``: what the task measures of its inputs under the recipe's preprocessing, without
        loading weights (text: tokens per text, the ``max_length`` a run would choose); most tasks have nothing."""
        return {}

    def tower_tasks(self) -> dict[str, str]:
        """A task whose model has several towers: tower name -> the task whose backbones it takes (``rank`` scores
        each candidate for its tower on that tower's input). A one-model task has none."""
        return {}

    def ablations(self, recipe: Recipe) -> dict[str, Recipe]:
        """``evaluation.compare_modalities``: one recipe per input alone, by name; a one-input task has none."""
        raise RecipeError(f"'evaluation.compare_modalities' needs a task with several inputs; '{self.name}' has one.")

    # ------------------------------------------------------------------------------ model and data

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        """The model with a new head for ``label_names``, and its processor (tokenizer / image config / None)."""
        raise NotImplementedError

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        """Lazy or cached preprocessing of the prepared splits."""
        raise NotImplementedError

    def save_processor(self, processor: Any, model: PreTrainedModel, directory: Path) -> None:
        """Write what ``pipeline(...)`` needs besides config and weights."""
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(directory)

    def check_value(self, role: str, value: Any, where: str) -> None:
        """Raise ``DataError`` (naming ``where``: split, row, column) if one raw input cannot be used the way
        training will use it; ``hf-transfer check`` runs it on a sample of rows. Nothing to check by default."""

    def predict(self, model_dir: Path, inputs: dict[str, list], top_k: int | None = None) -> list[list[dict]]:
        """Labels and scores, best first, for raw inputs by role (e.g. ``{"image": [...]}``). The default runs
        ``transformers.pipeline`` on the first input role, as a user of the saved folder would."""
        from transformers import pipeline

        role = self.input_roles[0]
        values = inputs.get(role)
        if not values:
            raise DataError(f"Task '{self.name}' predicts from --{role.replace('_', '-')}; give at least one.")
        extra = [r for r, v in inputs.items() if v and r not in self.input_roles]
        if extra:
            raise DataError(f"Task '{self.name}' reads {', '.join(self.input_roles)}, not {', '.join(extra)}.")
        pairs = inputs.get("text_pair") if "text_pair" in self.input_roles else None
        if pairs:
            if len(pairs) != len(values):
                raise DataError(f"Give one text pair per text: {len(values)} texts, {len(pairs)} pairs.")
            values = [{"text": t, "text_pair": p} for t, p in zip(values, pairs)]
        classify = pipeline(self.pipeline_tag, model=str(model_dir))
        results = classify(list(values), top_k=top_k or len(classify.model.config.id2label))
        return [r if isinstance(r, list) else [r] for r in results]

    # ------------------------------------------------------------------------------ which models fit

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None:
        """Reject a saved model folder (its ``config.json``) this task cannot load, before any data is read."""

    def bare_name_source(self, name: str, field: str) -> ModelSource | None:
        """Where a name that is neither a folder nor ``pypi:`` points, when it is not a Hub id (``None``: the Hub)."""
        return None

    def check_teacher(self, name: str, field: str, processor: Any, revision: str | None) -> None:
        """A distillation teacher sees the student's inputs: reject one that reads them differently."""

    # ------------------------------------------------------------------------------ feature cache

    def cache_blocker(self, recipe: Recipe) -> str | None:
        """Why this modality's inputs change between epochs, so cached features would be wrong (``None``: they do not)."""
        return None

    def preprocessing_identity(self, recipe: Recipe, model: PreTrainedModel, processor: Any) -> dict[str, Any]:
        """Everything besides weights and rows that changes the features, for the feature cache key."""
        return {}

    # ------------------------------------------------------------------------------ reporting

    def detect(self, features: Features) -> bool:
        """``hf-transfer rank`` without ``--task``: does data with these columns belong to this task?"""
        return False

    def card_facts(self, recipe: Recipe) -> CardFacts:
        roles = ", ".join(self.input_roles)
        return CardFacts(pipeline_tag=self.pipeline_tag, tags=(self.name,), input_text=f"the {roles} column(s)",
                         how_to_use=pipeline_usage(self.pipeline_tag, load_id(recipe), self.example_input))

    # ------------------------------------------------------------------------------ benchmark baselines

    def bench_batches(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool, batch_size: int) -> list[dict[str, Any]]:
        """``hf-transfer bench``'s raw loop: the split as ready tensors, batched by hand."""
        raise NotImplementedError(f"Task '{self.name}' has no benchmark baselines.")

    def bench_dataset(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool) -> Dataset:
        """``hf-transfer bench``'s naive ``Trainer``: the split fed as the transformers example scripts do."""
        raise NotImplementedError(f"Task '{self.name}' has no benchmark baselines.")


def get_task(name: str) -> TaskAdapter:
    """The adapter registered as ``name``; an unknown name is a ``RecipeError`` with the closest name."""
    return TASKS.lookup(name)()


def label_maps(label_names: list[str]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
