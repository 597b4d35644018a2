"""``Trainer`` with the strategy's parameter groups, soft-target (mixup/cutmix) losses and method loss terms.

Only ``train``, ``evaluate`` and ``predict`` (garbage collection, see ``gc_frozen``), ``get_train_dataloader``
(no last batch of one example for BatchNorm), ``create_optimizer``,
``compute_loss`` (which also hands each training loss to the non-finite-loss guard, weights the classes and adds
the transfer method's terms), ``floating_point_ops`` (parameters counted once) and ``log`` (per-term losses) are
overridden; the loop is transformers' own.

Class weights (``data.class_weights``) weight every training loss: the hard-label cross-entropy (also on cached
features, and the ``ce`` term the methods add to), and the soft-target one of mixup/cutmix. They are computed here
from the logits, never from the model's own (unweighted) loss. The evaluation loss stays the model's plain
cross-entropy, as ``hf-transfer evaluate`` reports it for the saved model; the weights shape training only.
"""

from __future__ import annotations

import copy
import gc
import logging
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch.nn import functional as F
from transformers import Trainer

from ..methods import Method
from ..strategies import Strategy

logger = logging.getLogger(__name__)


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep every object alive now out of Python's garbage collection until the block ends.

    accelerate's ``free_memory`` runs a full ``gc.collect()`` as training starts, and Python runs more of them
    during a long run. Each one walks the half a million objects that torch, transformers and datasets create on
    import, which can take longer than training a linear head on cached features. Frozen objects
    that become garbage meanwhile are collected after the block. Objects someone else froze stay frozen.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup/cutmix), optionally with one weight per class.

    Unweighted: the mean over the batch of ``-sum_c t_c log p_c`` (timm's ``SoftTargetCrossEntropy``). Weighted:
    ``sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic``, which for one-hot targets is exactly
    ``F.cross_entropy(logits, labels, weight=w)`` (a weighted mean over the examples).
    """
    log_probs = F.log_softmax(logits, dim=-1)
    if weight is None:
        return torch.sum(-targets * log_probs, dim=-1).mean()
    weighted = targets.float() * weight
    return -(weighted * log_probs.float()).sum() / weighted.sum().clamp_min(torch.finfo(torch.float32).tiny)


class TransferTrainer(Trainer):
    def __init__(self, *args, strategy: Strategy, mixup=None, loss_guard=None, method: Method | None = None,
                 class_weights: Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Classification heads here compute a plain batch mean (transformers' own, the mean-pooled and fused models,
        # the cached head), whatever their forward's **kwargs suggest. Left True, Trainer would neither divide by the
        # gradient-accumulation steps nor leave the loss unscaled across processes: 2 processes doubled it.
        self.model_accepts_loss_kwargs = False
        self.class_weights: torch.Tensor | None = (
            None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32))
        """One weight per label (in label order) for the training loss (``data.class_weights``); None: unweighted."""
        if self.class_weights is not None:
            # Every training loss is then a mean over its own batch, computed here: Trainer divides it by the
            # gradient accumulation steps (it would not for models whose own loss is normalised by the number
            # of labels in the accumulated batch, which the weighted loss does not use).
            self.loss_is_scaled_for_ga = False
        self._counted: tuple[torch.nn.Module, int] | None = None
        self.strategy = strategy
        self.method = method
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_count = 0
        self.mixup = mixup
        self.loss_guard = loss_guard
        """A ``guards.NonFiniteLossGuard`` (also registered as a callback) that sees every training loss."""

    def train(self, *args, **kwargs):
        with gc_frozen():
            return super().train(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with gc_frozen():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with gc_frozen():
            return super().predict(*args, **kwargs)

    def get_train_dataloader(self):
        """Trainer's loader, dropping the last batch when it would hold one example and the model has BatchNorm.

        BatchNorm cannot normalise a single example in training mode ("Expected more than 1 value per channel"),
        so e.g. 9 images in batches of 4 would crash at the end of the first epoch. With several processes the
        batch per process counts; accelerate's ``even_batches`` (the default) fills a short last batch from the
        start of the data, so then none is that small.
        """
        if not self._last_batch_is_single():
            return super().get_train_dataloader()
        logger.warning("The last training batch of each epoch would hold 1 of %d examples and the model has "
                       "BatchNorm, which cannot train on a single example: that batch is dropped.",
                       len(self.train_dataset))
        args = self.args
        self.args = copy.copy(args)  # drop_last for the training loader only, not for evaluation
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args = args

    def _last_batch_is_single(self) -> bool:
        if self.args.dataloader_drop_last or not hasattr(self.train_dataset, "__len__"):
            return False
        if self.args.world_size > 1 and self.accelerator.even_batches:
            return False
        batchnorm = torch.nn.modules.batchnorm._BatchNorm
        return (len(self.train_dataset) % self._train_batch_size == 1
                and any(isinstance(module, batchnorm) for module in self.model.modules()))

    def floating_point_ops(self, inputs: dict[str, torch.Tensor]) -> int:
        """Trainer's estimate (6 x input elements x non-embedding parameters), counting the parameters once.

        ``Trainer`` recounts them after every step, walking the whole module tree and every parameter, for a
        number that cannot change.
        """
        model = self.model
        main_input = getattr(model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(model, "num_parameters"):
            return 0
        if self._counted is None or self._counted[0] is not model:
            self._counted = (model, model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[main_input].numel() * self._counted[1]

    def create_optimizer(self, model=None):
        """One parameter group per (learning rate, weight decay) pair given by the strategy.

        Frozen parameters are included (they get no gradient, so no update and no optimizer state)
        so that strategies which unfreeze during training need no new optimizer.
        """
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        base_lr, weight_decay = self.args.learning_rate, self.args.weight_decay
        decay = set(self.get_decay_parameter_names(model))
        rates = self.strategy.rates(base_lr)
        groups: dict[tuple[float, float], list[torch.nn.Parameter]] = defaultdict(list)
        for name, parameter in model.named_parameters():
            groups[(rates.get(name, base_lr), weight_decay if name in decay else 0.0)].append(parameter)
        param_groups = [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]
        if self.method is not None:
            param_groups += self.method.parameter_groups(base_lr, weight_decay)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.method is not None and model.training:
            result = self._method_loss(model, inputs, return_outputs, num_items_in_batch)
        else:
            result = self._loss(model, inputs, return_outputs, num_items_in_batch)
        if self.loss_guard is not None and model.training:
            self.loss_guard.observe(result[0] if return_outputs else result)
        return result

    def _method_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The method's weighted terms (``ce`` = the usual loss) summed; their running means go to the logs."""
        ce, outputs = self._loss(model, inputs, True, num_items_in_batch)
        terms = self.method.loss_terms(model, inputs, outputs, ce)
        for name, value in terms.items():
            self._term_sums[name] = self._term_sums.get(name, 0.0) + value.detach().float()
        self._term_count += 1
        loss = sum(terms.values())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._term_count:
            for name, total in self._term_sums.items():
                logs[f"loss_{name}"] = round(float(total) / self._term_count, 6)
            self._term_sums, self._term_count = {}, 0
        super().log(logs, *args, **kwargs)

    def _loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The training (or evaluation) loss before the method's terms: plain, class-weighted or soft-target."""
        mixing = self.mixup is not None and model.training and inputs["labels"].shape[0] % 2 == 0
        weighted = self.class_weights is not None and model.training
        if not mixing and not weighted:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if mixing:
            mixed, targets = self.mixup(inputs)  # the task's mixing: model inputs and soft targets
            outputs = model(**mixed)
            loss = soft_target_cross_entropy(outputs.logits, targets, self._weight(outputs.logits))
        else:  # the logits only: the model's own loss would be unweighted (CachedHeadModel's too)
            outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
            loss = F.cross_entropy(outputs.logits.float(), inputs["labels"], weight=self._weight(outputs.logits),
                                   label_smoothing=self.args.label_smoothing_factor)
        return (loss, outputs) if return_outputs else loss

    def _weight(self, logits: torch.Tensor) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        if self.class_weights.device != logits.device:
            self.class_weights = self.class_weights.to(logits.device)
        return self.class_weights
