"""DANN: domain-adversarial training with unlabelled target-domain data."""

from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LambdaLR
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


#: ``method.selection`` -> (the evaluation metric ``training.metric_for_best_model`` becomes, greater is better,
#: what the card says). ``source_val`` leaves the recipe's own metric on the source validation split.
SELECTIONS: dict[str, tuple[str | None, bool, str]] = {
    "source_val": (None, True, "the best source validation score (`training.metric_for_best_model`)"),
    "target_entropy": ("target_entropy", False, "the lowest mean prediction entropy on the target validation "
                                                "images (their labels unused)"),
    "target_val": ("target_labelled_accuracy", True, "the best accuracy on a small labelled target validation set "
                                                     "(`target_labelled_per_class` examples per class)"),
}
#: Where ``batchnorm: per_domain`` keeps the other domain's running statistics: beside the saved model (the
#: source's) and in each checkpoint (the target's, as the model there holds the source's).
SOURCE_STATISTICS_FILE = "source_batchnorm.safetensors"
TARGET_STATISTICS_FILE = "dann_target_batchnorm.safetensors"
#: Training fields that ``lr_schedule: dann`` replaces; a recipe setting them asks for two schedules.
SCHEDULE_FIELDS = ("lr_scheduler_type", "warmup_steps", "warmup_ratio", "lr_scheduler_kwargs")


@dataclass
class DannOptions:
    RENAMED: ClassVar[dict[str, str]] = {
        "joint_forward": "write method.batchnorm: joint (was true) or separate (was false); per_domain, one set of "
                         "BatchNorm statistics per domain, is the default now"}
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
    """Reversal coefficient ``lambda = 2 / (1 + exp(-gamma p)) - 1`` at progress ``p`` of the steps after warm-up."""
    warmup_steps: int = 0
    """Optimizer steps at the start without the adversarial term: the label classifier learns the source first
    (with ``batchnorm: joint`` or ``per_domain`` the target batches still pass, for the statistics), then the
    domain classifier starts and lambda ramps over the remaining steps. With the ramp tied to all steps, a one-epoch run reaches
    lambda ~ 1 by mid-run. A domain classifier trained alone during the warm-up would separate the domains with
    huge confidence, and the reversal would then flip the features rather than align them."""
    warmup_fraction: float = 0.0
    """The warm-up as a share of all optimizer steps (e.g. 0.3); set this or ``warmup_steps``."""
    lr_schedule: Literal["none", "dann"] = "none"
    """``dann``: the paper's annealing ``mu_p = mu_0 / (1 + lr_alpha p)^lr_beta`` over all steps, for every learning
    rate (backbone, head, domain classifier), instead of ``training.lr_scheduler_type`` and its warm-up;
    ``none``: the Trainer's schedule."""
    lr_alpha: float = 10.0
    """``alpha`` of the annealing (the paper's 10)."""
    lr_beta: float = 0.75
    """``beta`` of the annealing (the paper's 0.75)."""
    selection: Literal["source_val", "target_entropy", "target_val"] = "source_val"
    """Which evaluated checkpoint the run keeps (``training.load_best_model_at_end``): ``source_val`` by
    ``training.metric_for_best_model`` on the source validation split; ``target_entropy`` by the lowest mean
    prediction entropy on the target validation images (unsupervised); ``target_val`` by the accuracy on
    ``target_labelled_per_class`` labelled examples per class of the target validation split."""
    batchnorm: Literal["joint", "separate", "per_domain"] = "per_domain"
    """Models with BatchNorm. ``per_domain`` (the default): one pass per domain and one set of running statistics
    per domain (AdaBN, Li et al. 2016; domain-specific BatchNorm, Chang et al., CVPR 2019): the saved model
    normalises with the target's, the source's are saved beside it (``source_batchnorm.safetensors``) and the
    source metrics are measured with them; one shared set cannot serve two domains whose inputs differ
    (docs/performance.md). ``joint``: source and target batches go through the model together, so they share
    batch statistics in training as they share the saved running statistics at test time. ``separate``: one pass
    per domain, each normalised with its own batch statistics but one set of running statistics; the model then
    leans on per-domain statistics it will not have at test time. Without BatchNorm layers the three are the
    same."""
    domain_learning_rate: float | None = None
    """Learning rate of the domain classifier; defaults to ``training.learning_rate``."""

    def __post_init__(self) -> None:
        for name in ("source_weight", "target_weight", "adversarial_weight", "ramp_gamma", "lr_alpha", "lr_beta"):
            if getattr(self, name) < 0:
                raise RecipeError(f"'method.{name}' must be >= 0; got {getattr(self, name)}.")
        if self.target_labelled_per_class < 0 or self.hidden_size < 1:
            raise RecipeError("'method.target_labelled_per_class' must be >= 0 and 'method.hidden_size' >= 1.")
        if self.domain_learning_rate is not None and self.domain_learning_rate <= 0:
            raise RecipeError(f"'method.domain_learning_rate' must be > 0; got {self.domain_learning_rate}.")
        if self.warmup_steps < 0 or not 0 <= self.warmup_fraction < 1:
            raise RecipeError(f"'method.warmup_steps' must be >= 0 and 'method.warmup_fraction' in [0, 1); got "
                              f"{self.warmup_steps} and {self.warmup_fraction}.")
        if self.warmup_steps and self.warmup_fraction:
            raise RecipeError("'method.warmup_steps' and 'method.warmup_fraction' both set: keep one of them.")
        if self.selection == "target_val" and not self.target_labelled_per_class:
            raise RecipeError("'method.selection' = target_val needs labelled target examples: set "
                              "'method.target_labelled_per_class' > 0, or choose target_entropy or source_val.")

    def warmup(self, total_steps: int) -> int:
        """Optimizer steps with the reversal coefficient held at 0."""
        return self.warmup_steps or round(self.warmup_fraction * total_steps)


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


def adversarial_coefficient(step: int, total_steps: int, warmup: int = 0, gamma: float = 10.0) -> float:
    """0 during the first ``warmup`` steps, then the ramp over the steps that remain."""
    if step < warmup:
        return 0.0
    return reversal_coefficient(min((step - warmup) / max(total_steps - warmup, 1), 1.0), gamma)


def annealed_rate(progress: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """DANN's learning-rate factor ``1 / (1 + alpha p)^beta`` (Ganin et al., JMLR 2016, section 5.2.2)."""
    return (1.0 + alpha * progress) ** -beta


@dataclass
class AnnealedSchedule:
    """A ``LambdaLR`` factor: :func:`annealed_rate` at optimizer step ``step`` of ``total_steps``.

    A callable object rather than a closure, so ``LambdaLR.state_dict`` saves its fields with the checkpoint.
    """

    total_steps: int
    alpha: float
    beta: float

    def __call__(self, step: int) -> float:
        return annealed_rate(min(step / max(self.total_steps, 1), 1.0), self.alpha, self.beta)


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row's softmax."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -(np.exp(log_p) * log_p).sum(axis=-1)


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


def stackable(batches: list[dict[str, Any]]) -> bool:
    """Whether the batches hold the same tensors up to the batch size (images of one size: yes; texts padded to
    their own longest: rarely), so that one forward pass can take them together."""
    first = batches[0]
    return all(batch.keys() == first.keys() and all(
        torch.is_tensor(value) and torch.is_tensor(batch[key]) and value.shape[1:] == batch[key].shape[1:]
        for key, value in first.items()) for batch in batches[1:])


@contextmanager
def momentum(layers: dict[nn.Module, float | None]) -> Iterator[None]:
    """BatchNorm ``layers`` with the given momentum inside the block, and 0 (no running-statistics update) after."""
    for layer, value in layers.items():
        layer.momentum = value
    try:
        yield
    finally:
        for layer in layers:
            layer.momentum = 0.0


class DomainStatistics:
    """Two sets of BatchNorm running statistics in one model (``batchnorm: per_domain``).

    The layers hold the active domain's buffers; the other domain's wait here and are swapped in by reference, so
    a switch costs no copy. Both start from the model's own (pretrained) statistics. torch has no such layer
    (a BatchNorm with several running statistics), hence this.
    """

    BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, model: nn.Module) -> None:
        self.layers = {name: layer for name, layer in model.named_modules()
                       if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats}
        self.active = "source"
        self.waiting = {name: {key: tensor.clone() for key, tensor in self._held(layer).items()}
                        for name, layer in self.layers.items()}

    def __bool__(self) -> bool:
        return bool(self.layers)

    def _held(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        return {key: getattr(layer, key) for key in self.BUFFERS}

    def use(self, domain: str) -> None:
        """Make ``domain``'s statistics the layers' own (``source`` or ``target``)."""
        if domain == self.active:
            return
        for name, layer in self.layers.items():
            held = self._held(layer)
            for key, tensor in self.waiting[name].items():
                setattr(layer, key, tensor)  # a registered buffer: the module's state_dict now holds it
            self.waiting[name] = held
        self.active = domain

    @contextmanager
    def of(self, domain: str) -> Iterator[None]:
        previous = self.active
        self.use(domain)
        try:
            yield
        finally:
            self.use(previous)

    def state_dict(self, domain: str) -> dict[str, torch.Tensor]:
        """``domain``'s statistics under the model's own state-dict names, on the CPU."""
        with self.of(domain):
            return {f"{name}.{key}": tensor.detach().cpu().clone().contiguous()
                    for name, layer in self.layers.items() for key, tensor in self._held(layer).items()}

    def load_state_dict(self, domain: str, weights: dict[str, torch.Tensor]) -> None:
        with self.of(domain), torch.no_grad():
            for name, layer in self.layers.items():
                for key, tensor in self._held(layer).items():
                    tensor.copy_(weights[f"{name}.{key}"])


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

    The schedule follows the paper (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016):
    the reversal coefficient ramps from 0 to 1, optionally after a warm-up on the source alone, and
    ``lr_schedule: dann`` anneals the learning rate. Every evaluation also measures the target validation split
    (``eval_target_accuracy``, ``eval_target_entropy`` in the logs), which ``selection`` can keep the checkpoint by.
    In a model with BatchNorm the target batches join the source batch in one pass (``batchnorm: joint``, as in
    TLlib's DANN), and the Trainer's own source pass, whose loss is then recomputed, leaves the running statistics
    alone; or each domain keeps its own statistics (``batchnorm: per_domain``, :class:`DomainStatistics`).
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
        self._selection_indices: list[int] | None = None
        self._momenta: dict[nn.Module, float | None] = {}
        """BatchNorm layers and their momentum, while joint passes alone move the running statistics."""
        self.statistics: DomainStatistics | None = None
        """``batchnorm: per_domain``: the target's running statistics beside the source's."""

    def preflight(self, recipe, task, label_names: list[str] | None = None) -> dict[str, Any]:
        """The options agree with ``training``; the target data loads with the task's columns (and, given the
        run's labels, the same label set)."""
        check_training(self.options, recipe.training)
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
        per_class, seed = self.options.target_labelled_per_class, int(trainer.args.seed)
        if per_class:
            self._labelled_indices = per_class_indices(column_values(target.train, LABEL), per_class, seed)
            self._selection_indices = per_class_indices(column_values(target.validation, LABEL), per_class, seed)
        target_passes = self.options.adversarial_weight > 0 or (per_class and self.options.target_weight > 0)
        if self.options.batchnorm == "joint" and target_passes:
            self._momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        if self.options.batchnorm == "per_domain":
            self.statistics = DomainStatistics(model) or None
        metric, greater_is_better, _ = SELECTIONS[self.options.selection]
        if metric is not None:  # the Trainer keeps the checkpoint by it; preflight refused a conflicting recipe
            trainer.args.metric_for_best_model, trainer.args.greater_is_better = metric, greater_is_better
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
        parts = {"source": inputs}
        if self.labelled is not None and options.target_weight > 0:
            parts["labelled"] = next(self.labelled)
        playing = False  # whether the domain classifier plays this step (not during the warm-up)
        if options.adversarial_weight > 0:
            state = self.trainer.state
            warmup = options.warmup(state.max_steps)
            self.coefficient = adversarial_coefficient(state.global_step, state.max_steps, warmup, options.ramp_gamma)
            playing = state.global_step >= warmup
            if playing or self._momenta:  # in the warm-up the target batch only joins the batch statistics
                parts["unlabelled"] = next(self.unlabelled)
        if self.statistics is not None and "unlabelled" not in parts:  # warm-up, source only: target statistics
            parts["unlabelled"] = next(self.unlabelled)
        if len(parts) > 1 and self._momenta and not stackable(list(parts.values())):
            logger.warning("DANN: source and target batches differ in shape; they go through the model one at a "
                           "time (method.batchnorm: separate) from now on.")
            self.end_joint_passes()
            self._momenta = {}
        if len(parts) > 1 and self._momenta:
            logits, features = self._joint_forward(model, parts)
            ce = self._cross_entropy(logits["source"], inputs[LABEL])  # with the target in the batch statistics
        else:
            logits, features = self._separate_forwards(model, parts)
        terms = {"ce": options.source_weight * ce}
        if "labelled" in parts:
            labels = parts["labelled"][LABEL].to(self.trainer.args.device)
            terms["target_ce"] = options.target_weight * F.cross_entropy(logits["labelled"], labels)
        if playing:
            source, target = features["source"], features["unlabelled"]
            both = torch.cat([source, target]).float()
            domains = torch.cat([both.new_zeros(len(source)), both.new_ones(len(target))])
            scores = self.discriminator(grad_reverse(both, self.coefficient)).squeeze(-1)
            terms["adv"] = options.adversarial_weight * F.binary_cross_entropy_with_logits(scores, domains)
        self.features = None
        return terms

    def _joint_forward(self, model: nn.Module, parts: dict[str, dict[str, Any]]):
        """One pass over the source and target batches together; logits and pooled features by part.

        The Trainer's own source pass before it ran with the running statistics frozen: only this pass, over
        both domains, moves them.
        """
        device = self.trainer.args.device
        sizes = [len(batch[LABEL]) for batch in parts.values()]
        joint = {key: torch.cat([batch[key].to(device) for batch in parts.values()])
                 for key in parts["source"] if key != LABEL}
        with momentum(self._momenta):
            outputs = model(**joint)
        return dict(zip(parts, outputs.logits.split(sizes))), dict(zip(parts, self.features.split(sizes)))

    def _separate_forwards(self, model: nn.Module, parts: dict[str, dict[str, Any]]):
        """One pass per target batch after the Trainer's source pass (models without BatchNorm: the same result),
        with the target's running statistics when each domain has its own."""
        logits, features = {}, {"source": self.features}
        with self.target_statistics():
            if "labelled" in parts:
                logits["labelled"] = self._forward(model, parts["labelled"])[0].logits
            if "unlabelled" in parts:
                with torch.set_grad_enabled(self.coefficient > 0):  # no reversed gradient yet: no backward
                    self._forward(model, parts["unlabelled"])
                features["unlabelled"] = self.features
        return logits, features

    def target_statistics(self):
        """A block in which the model normalises with the target's running statistics (``per_domain``)."""
        return self.statistics.of("target") if self.statistics is not None else nullcontext()

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The Trainer's source loss, recomputed on the joint pass: class weights and label smoothing included."""
        weight = self.trainer.class_weights
        return F.cross_entropy(logits.float(), labels.to(logits.device),
                               weight=None if weight is None else weight.to(logits.device),
                               label_smoothing=self.trainer.args.label_smoothing_factor)

    def start_joint_passes(self) -> None:
        """Freeze the running statistics outside the joint passes (training begins)."""
        for layer in self._momenta:
            layer.momentum = 0.0

    def end_joint_passes(self) -> None:
        """Give the BatchNorm layers their momentum back (training ends, or batches cannot be joined)."""
        for layer, value in self._momenta.items():
            layer.momentum = value

    def target_scores(self) -> dict[str, float]:
        """The target validation split's accuracy and mean prediction entropy (and, with labelled target examples,
        the accuracy on the small labelled selection set), named as ``Trainer.evaluate`` names its metrics."""
        with self.target_statistics():
            output = self.trainer.predict(self.target_inputs.validation, metric_key_prefix="target_validation")
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        correct = np.argmax(logits, axis=-1) == np.asarray(output.label_ids)
        scores = {"eval_target_accuracy": round(float(correct.mean()), 6),
                  "eval_target_entropy": round(float(entropy(np.asarray(logits, dtype=np.float64)).mean()), 6)}
        if self._selection_indices is not None:
            scores["eval_target_labelled_accuracy"] = round(float(correct[self._selection_indices].mean()), 6)
        return scores

    def parameter_groups(self, learning_rate: float, weight_decay: float) -> list[dict[str, Any]]:
        lr = self.options.domain_learning_rate or learning_rate
        return [{"params": list(self.discriminator.parameters()), "lr": lr, "weight_decay": weight_decay}]

    def callbacks(self) -> list[TrainerCallback]:
        callbacks = [_SingleProcessOnly(), DomainClassifierCheckpoint(self), DomainClassifierGradients(self),
                     TargetEvaluation(self), JointPasses(self), TargetStatisticsCheckpoint(self)]
        if self.options.lr_schedule == "dann":
            callbacks.append(AnnealedLearningRate(self.options.lr_alpha, self.options.lr_beta))
        return callbacks

    def extra_metrics(self, trainer, label_names: list[str]) -> dict[str, Any]:
        """The target splits; with ``batchnorm: per_domain`` measured with the target's statistics, which the model
        keeps from here on (the source splits were measured before, with the source's)."""
        with self.target_statistics():
            metrics = {"target_validation": evaluate_split(trainer, self.target_inputs.validation, label_names,
                                                           "target_validation")}
            if self.target_inputs.test is not None:
                metrics["target_test"] = evaluate_split(trainer, self.target_inputs.test, label_names, "target_test")
        options, total = self.options, int(trainer.state.max_steps)
        metric, _, selected_by = SELECTIONS[options.selection]
        metrics["domain_adaptation"] = {
            "method": "dann", "selection": options.selection,
            "selection_metric": metric or trainer.args.metric_for_best_model, "selected_by": selected_by,
            "lr_schedule": options.lr_schedule, "lr_alpha": options.lr_alpha, "lr_beta": options.lr_beta,
            "adversarial_warmup_steps": options.warmup(total),
            "final_coefficient": round(self.coefficient, 6), "batchnorm": options.batchnorm}
        if self.statistics is not None:
            split = "target_test" if self.target_inputs.test is not None else "target_validation"
            inputs = self.target_inputs.test if self.target_inputs.test is not None else self.target_inputs.validation
            with self.statistics.of("source"):  # what the same weights score on the target without its statistics
                plain = evaluate_split(trainer, inputs, label_names, f"{split}_source_statistics")
            metrics["domain_adaptation"].update({
                "saved_statistics": "target", "source_statistics_file": SOURCE_STATISTICS_FILE,
                "target_with_source_statistics": {"split": split, "accuracy": plain["accuracy"],
                                                  "f1_macro": plain["f1_macro"]}})
            self.statistics.use("target")
        return metrics

    def write_outputs(self, folder: Path) -> None:
        """``batchnorm: per_domain``: the source's running statistics beside the model, which holds the target's."""
        if self.statistics is not None:
            save_file(self.statistics.state_dict("source"), str(Path(folder) / SOURCE_STATISTICS_FILE),
                      metadata={"format": "pt"})


def check_training(options: DannOptions, training: dict[str, Any]) -> None:
    """Refuse ``training`` fields that the options replace, before anything is loaded or trained."""
    if options.lr_schedule == "dann":
        clash = [name for name in SCHEDULE_FIELDS if name in training]
        if clash:
            raise RecipeError(f"'method.lr_schedule' = dann replaces training.{clash[0]} (the annealing sets every "
                              "learning rate): remove it, or set method.lr_schedule: none.")
    if options.selection == "source_val":
        return
    if "metric_for_best_model" in training:
        raise RecipeError(f"'method.selection' = {options.selection} chooses the checkpoint, but "
                          f"training.metric_for_best_model = {training['metric_for_best_model']!r} too: remove one.")
    if training.get("load_best_model_at_end") is False or training.get("eval_strategy", "epoch") == "no":
        raise RecipeError(f"'method.selection' = {options.selection} picks among evaluated checkpoints: keep "
                          "training.load_best_model_at_end true and training.eval_strategy other than 'no'.")


class TargetEvaluation(TrainerCallback):
    """Adds :meth:`DANN.target_scores` to every evaluation, before the Trainer compares it with the best so far.

    ``on_evaluate`` receives the very dict of metrics that ``Trainer`` then reads ``metric_for_best_model`` from;
    the scores also join that evaluation's entry of the log history.
    """

    def __init__(self, method: DANN) -> None:
        self.method = method

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is None or self.method.target_inputs is None:
            return
        scores = self.method.target_scores()
        metrics.update(scores)
        last = state.log_history[-1] if state.log_history else {}
        if last.get("step") == state.global_step and "eval_loss" in last:
            last.update(scores)


class JointPasses(TrainerCallback):
    """Only the joint passes move the BatchNorm running statistics during training; the momentum is back after."""

    def __init__(self, method: DANN) -> None:
        self.method = method

    def on_train_begin(self, args, state, control, **kwargs):
        self.method.start_joint_passes()

    def on_train_end(self, args, state, control, **kwargs):
        self.method.end_joint_passes()


class DomainClassifierGradients(TrainerCallback):
    """Clears the domain classifier's gradients after every optimizer step.

    ``Trainer`` calls ``model.zero_grad()`` only, and the domain classifier is not part of the model: without
    this its gradients would add up over the whole run, and the optimizer would step on their sum.
    """

    def __init__(self, method: DANN) -> None:
        self.method = method

    def on_step_end(self, args, state, control, **kwargs):
        self.method.discriminator.zero_grad(set_to_none=True)


class AnnealedLearningRate(TrainerCallback):
    """``lr_schedule: dann``: the Trainer's ``LambdaLR`` gets :class:`AnnealedSchedule` as the factor of every group.

    Done when training begins, after the scheduler exists and a resumed run has loaded its state; the current
    learning rates are set at once, so the first step (or the first after a resume) already follows the annealing.
    """

    def __init__(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if not isinstance(lr_scheduler, LambdaLR):
            raise RecipeError(f"'method.lr_schedule' = dann needs the Trainer's own LambdaLR scheduler; this run has "
                              f"{type(lr_scheduler).__name__}: set method.lr_schedule: none.")
        schedule = AnnealedSchedule(int(state.max_steps), self.alpha, self.beta)
        groups = lr_scheduler.optimizer.param_groups
        lr_scheduler.lr_lambdas = [schedule] * len(groups)
        for group, base in zip(groups, lr_scheduler.base_lrs):
            group["lr"] = base * schedule(lr_scheduler.last_epoch)
        lr_scheduler._last_lr = [group["lr"] for group in groups]


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


class TargetStatisticsCheckpoint(TrainerCallback):
    """``batchnorm: per_domain``: each checkpoint's model holds the source statistics, and this file the target's;
    read back on resume and with the best checkpoint at the end of training."""

    def __init__(self, method: DANN) -> None:
        self.method = method

    def path(self, args, step: int) -> Path:
        return checkpoint_dir(args.output_dir, step) / TARGET_STATISTICS_FILE

    def on_save(self, args, state, control, **kwargs):
        statistics, path = self.method.statistics, self.path(args, state.global_step)
        if statistics is not None and state.is_world_process_zero and path.parent.is_dir():
            save_file(statistics.state_dict("target"), path)  # before the manifest is written: the manifest lists it

    def on_train_begin(self, args, state, control, **kwargs):
        if self.method.statistics is not None and state.global_step:
            self._load(self.path(args, state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        best = state.best_model_checkpoint
        if self.method.statistics is not None and args.load_best_model_at_end and best:
            self._load(Path(best) / TARGET_STATISTICS_FILE)  # the Trainer has just loaded that checkpoint's model

    def _load(self, path: Path) -> None:
        if path.is_file():
            self.method.statistics.load_state_dict("target", load_file(path))
        else:
            logger.warning("Checkpoint %s has no %s; the target's BatchNorm statistics are those of the last step.",
                           path.parent, TARGET_STATISTICS_FILE)


class _SingleProcessOnly(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "world_size", 1) > 1:
            raise RecipeError("'method' = dann runs in one process only: its domain classifier lives outside the "
                              "model, so DDP would not synchronise it.")
