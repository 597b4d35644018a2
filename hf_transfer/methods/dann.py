"""DANN: domain-adversarial training with unlabelled target-domain data."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from ..data.prepare import LABEL, PreparedData, column_values, prepare_data
from ..data.sampling import per_class_indices
from ..errors import DataError, RecipeError
from ..models.layout import discover_layout
from ..models.weights import where
from ..recipe import DataSection, Recipe
from ..tasks.base import TaskAdapter, get_task
from ..training.checkpoints import checkpoint_dir
from ..evaluation.predict import evaluate_split
from . import register_method
from .base import Method, classifier_layer, unwrap

logger = logging.getLogger(__name__)


@dataclass
class DannOptions:
    target: DataSection
    """Target-domain data, read like the ``data`` section (same label set; its train labels are not used
    except for ``target_labelled_per_class`` examples). Image size, augmentation and max_length come from ``data``."""
    source_weight: float = 1.0
    """``a``: weight of the cross-entropy on labelled source batches."""
    target_weight: float = 1.0
    """``b``: weight of the cross-entropy on labelled target batches (only with ``target_labelled_per_class``)."""
    adversarial_weight: float = 1.0
    """``c``: weight of the domain-classification loss; 0 gives the source-only baseline."""
    target_labelled_per_class: int = 0
    """Labelled target examples per class (semi-supervised adaptation); 0 = unsupervised."""
    hidden_size: int = 256
    """Width of the domain classifier's hidden layer."""
    ramp_gamma: float = 10.0
    """Reversal coefficient ``lambda = 2 / (1 + exp(-gamma p)) - 1`` at training progress ``p``."""
    domain_learning_rate: float | None = None
    """Learning rate of the domain classifier; defaults to ``training.learning_rate``."""

    def __post_init__(self) -> None:
        for name in ("source_weight", "target_weight", "adversarial_weight", "ramp_gamma"):
            if getattr(self, name) < 0:
                raise RecipeError(f"'method.{name}' must be >= 0; got {getattr(self, name)}.")
        if self.target_labelled_per_class < 0 or self.hidden_size < 1:
            raise RecipeError("'method.target_labelled_per_class' must be >= 0 and 'method.hidden_size' >= 1.")
        if self.domain_learning_rate is not None and self.domain_learning_rate <= 0:
            raise RecipeError(f"'method.domain_learning_rate' must be > 0; got {self.domain_learning_rate}.")


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def grad_reverse(features: torch.Tensor, coefficient: float) -> torch.Tensor:
    return GradientReversal.apply(features, coefficient)


def reversal_coefficient(progress: float, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's ramp from 0 to 1: early, noisy domain gradients must not disturb the features."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def target_section(recipe: Recipe, target: DataSection) -> DataSection:
    """The target data read like ``data``, with the source's image size, crop, max_length and augmentation."""
    source = recipe.data
    return dataclasses.replace(target, image_size=source.image_size, crop_pct=source.crop_pct,
                               max_length=source.max_length, augmentation=source.augmentation)


def load_target(section: DataSection, task: TaskAdapter, seed: int,
                label_names: list[str] | None = None) -> PreparedData:
    """``prepare_data`` on the target section, its errors naming ``method.target`` rather than ``data``."""
    try:
        target = prepare_data(section, task.input_roles, seed)
    except DataError as error:
        text = str(error)
        text = (text.replace("'data.", "'method.target.") if "'data." in text
                else f"{where('method.target.path', section.path)}: {text}")
        raise DataError(text) from None
    if label_names is not None and target.label_names != list(label_names):
        raise DataError(f"{where('method.target', section.path)} has labels {target.label_names[:10]} but the "
                        f"source data has {list(label_names)[:10]}; DANN needs one label set in the same order.")
    return target


def domain_classifier(in_features: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


def endless(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


@register_method("dann")
class DANN(Method):
    """``a L_src + b L_tgt + c L_adv`` with a gradient-reversal layer before a domain classifier.

    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015: the domain classifier
    learns to tell source from target pooled features, and the reversed gradient trains the backbone to
    make them indistinguishable, so the label classifier learnt on source transfers to the target. Pooled
    features are read by a hook on the input of the final classification layer, which works for timm and
    transformers backbones alike; for a fused image-text model that is the fused vector, so both towers adapt.
    The domain classifier lives outside the model: it is not part of the saved model folder, but every
    checkpoint carries it so that a resumed run goes on with it (target batches are drawn afresh after a
    resume, so such a run is close to, not identical with, an uninterrupted one).
    """

    Options = DannOptions
    supports_mixup = False

    def __init__(self, options: DannOptions) -> None:
        super().__init__(options)
        self.trainer = None
        self.features: torch.Tensor | None = None
        self.discriminator: nn.Module | None = None
        self.target_inputs = None
        self.unlabelled: Iterator | None = None
        self.labelled: Iterator | None = None
        self.coefficient = 0.0
        self._labelled_indices: list[int] | None = None

    def preflight(self, recipe, task, label_names: list[str] | None = None) -> dict[str, Any]:
        """The target data loads with the task's columns (and, given the run's labels, the same label set)."""
        section = target_section(recipe, self.options.target)
        target = load_target(section, task, recipe.seed, label_names)
        return {"target": {"path": section.path, "columns": target.columns, "labels": target.label_names,
                           "splits": target.sizes()}}

    def setup(self, recipe, data, trainer) -> None:
        self.trainer = trainer
        model = unwrap(trainer.model)
        layer = classifier_layer(model, discover_layout(model))
        layer.register_forward_pre_hook(self._capture)
        self.discriminator = domain_classifier(layer.in_features, self.options.hidden_size).to(trainer.args.device)
        self.target_inputs, target = self._target_inputs(recipe, data, trainer)
        self._labelled_indices = (per_class_indices(column_values(target.train, LABEL),
                                                    self.options.target_labelled_per_class, int(trainer.args.seed))
                                  if self.options.target_labelled_per_class else None)
        self.start_target_batches(resumed_at_step=0)

    def start_target_batches(self, resumed_at_step: int) -> None:
        """Endless shuffled target loaders; a resumed run seeds them with its step so it does not replay the start."""
        seed = int(self.trainer.args.seed) + 1000 * resumed_at_step
        self.unlabelled = endless(self._loader(self.target_inputs.train, self.trainer, seed))
        if self._labelled_indices is not None:
            labelled = self.target_inputs.train.select(self._labelled_indices)
            self.labelled = endless(self._loader(labelled, self.trainer, seed + 1))

    def _target_inputs(self, recipe, data, trainer):
        section = target_section(recipe, self.options.target)
        task = get_task(recipe.task)
        target = load_target(section, task, int(trainer.args.seed), data.label_names)
        target_recipe = dataclasses.replace(recipe, data=section)
        return task.model_inputs(target_recipe, target, unwrap(trainer.model), trainer.processing_class), target

    def _loader(self, dataset, trainer, seed: int) -> DataLoader:
        batch = trainer.args.per_device_train_batch_size
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch, shuffle=True, generator=generator,
                          collate_fn=self.target_inputs.collator, drop_last=len(dataset) >= batch)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if module.training:
            self.features = args[0]

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        device = self.trainer.args.device
        outputs = model(**{k: v.to(device) for k, v in batch.items() if k != LABEL})
        return outputs, batch[LABEL].to(device)

    def loss_terms(self, model: nn.Module, inputs: dict[str, Any], outputs: Any,
                   ce: torch.Tensor) -> dict[str, torch.Tensor]:
        options = self.options
        source_features = self.features
        terms = {"ce": options.source_weight * ce}
        if self.labelled is not None and options.target_weight > 0:
            target_outputs, labels = self._forward(model, next(self.labelled))
            terms["target_ce"] = options.target_weight * F.cross_entropy(target_outputs.logits, labels)
        if options.adversarial_weight > 0:
            self._forward(model, next(self.unlabelled))
            state = self.trainer.state
            self.coefficient = reversal_coefficient(state.global_step / max(state.max_steps, 1), options.ramp_gamma)
            features = torch.cat([source_features, self.features]).float()
            domains = torch.cat([features.new_zeros(len(source_features)), features.new_ones(len(self.features))])
            logits = self.discriminator(grad_reverse(features, self.coefficient)).squeeze(-1)
            terms["adv"] = options.adversarial_weight * F.binary_cross_entropy_with_logits(logits, domains)
        self.features = None
        return terms

    def parameter_groups(self, learning_rate: float, weight_decay: float) -> list[dict[str, Any]]:
        lr = self.options.domain_learning_rate or learning_rate
        return [{"params": list(self.discriminator.parameters()), "lr": lr, "weight_decay": weight_decay}]

    def callbacks(self) -> list[TrainerCallback]:
        return [_SingleProcessOnly(), DomainClassifierCheckpoint(self)]

    def extra_metrics(self, trainer, label_names: list[str]) -> dict[str, Any]:
        metrics = {"target_validation": evaluate_split(trainer, self.target_inputs.validation, label_names,
                                                       "target_validation")}
        if self.target_inputs.test is not None:
            metrics["target_test"] = evaluate_split(trainer, self.target_inputs.test, label_names, "target_test")
        return metrics


class DomainClassifierCheckpoint(TrainerCallback):
    """Writes the domain classifier into each checkpoint folder and loads it back when training resumes."""

    FILE = "dann_domain_classifier.safetensors"

    def __init__(self, method: DANN) -> None:
        self.method = method

    def path(self, args, state) -> Path:
        return checkpoint_dir(args.output_dir, state.global_step) / self.FILE

    def on_save(self, args, state, control, **kwargs):
        path = self.path(args, state)
        if state.is_world_process_zero and path.parent.is_dir():
            weights = {k: v.detach().contiguous().cpu() for k, v in self.method.discriminator.state_dict().items()}
            save_file(weights, path)  # before the checkpoint's manifest is written: the manifest lists it

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            return
        path = self.path(args, state)
        if path.is_file():
            self.method.discriminator.load_state_dict(load_file(path, device=str(args.device)))
        else:
            logger.warning("Checkpoint %s has no %s; the domain classifier starts afresh.", path.parent, self.FILE)
        self.method.start_target_batches(resumed_at_step=state.global_step)


class _SingleProcessOnly(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "world_size", 1) > 1:
            raise RecipeError("'method' = dann runs in one process only: its domain classifier lives outside the "
                              "model, so DDP would not synchronise it.")
