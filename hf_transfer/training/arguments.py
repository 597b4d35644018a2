"""The recipe's ``training`` section -> ``transformers.TrainingArguments``.

Every ``TrainingArguments`` field passes through unchanged; hf-transfer only fills defaults that
suit transfer learning (evaluate and checkpoint each epoch, keep the best model, no trackers).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from ..config_utils import unknown_key_error
from ..errors import RecipeError

#: Defaults under the user's ``training`` section; task-specific ones come from the task.
TRANSFER_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "weight_decay": 0.01,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "cosine",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_strategy": "steps",
    "logging_steps": 10,
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "save_total_limit": 2,
    "report_to": "none",
    "ddp_find_unused_parameters": False,
    "seed": 42,
}

#: Fields hf-transfer owns: they follow from ``output.*`` or from the task.
MANAGED = {"output_dir", "remove_unused_columns", "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo",
           "resume_from_checkpoint"}
#: What to do instead, for managed keys whose replacement is not in the ``output`` section.
_MANAGED_HINTS = {
    "resume_from_checkpoint": "resuming is automatic: run the same command again and it continues from the last "
                              "complete checkpoint in output.dir; to start from other weights, set model.name_or_path",
}
_MUST_BE_POSITIVE = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                     "per_device_eval_batch_size", "gradient_accumulation_steps")
#: (lowest, highest) allowed for numeric fields; values outside are typos, not experiments.
_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (0, 9.99), "num_train_epochs": (0, 100_000), "per_device_train_batch_size": (1, 1 << 20),
    "per_device_eval_batch_size": (1, 1 << 20), "gradient_accumulation_steps": (1, 1 << 16),
    "weight_decay": (0, 10), "warmup_steps": (0, 1e9), "warmup_ratio": (0, 1), "max_grad_norm": (0, 1e9),
    "label_smoothing_factor": (0, 1), "adam_beta1": (0, 1), "adam_beta2": (0, 1), "adam_epsilon": (0, 1),
    "logging_steps": (0, 1e12), "eval_steps": (0, 1e12), "save_steps": (0, 1e12), "max_steps": (-1, 1e12),
    "seed": (0, 2**32 - 1), "dataloader_num_workers": (0, 1024), "save_total_limit": (1, 1e9),
}
_INTEGERS = {"per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
             "max_steps", "seed", "dataloader_num_workers", "save_total_limit"}


def _check_number(key: str, value: Any) -> None:
    if value is None and key not in _MUST_BE_POSITIVE:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecipeError(f"'training.{key}' must be a number; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"'training.{key}' must be a number; got {value!r}.") from None
    if key in _MUST_BE_POSITIVE and not number > 0:
        raise RecipeError(f"'training.{key}' must be > 0; got {value!r}.")
    low, high = _RANGES[key]
    if not low <= number <= high:  # also catches nan
        size = "far too large" if number > high else "too small" if number < low else "not a number"
        hint = " Typical values are 1e-5 .. 1e-2." if key == "learning_rate" else ""
        raise RecipeError(f"'training.{key}' = {value!r} is {size}: it must be between {low:g} and {high:g}.{hint}")
    if key in _INTEGERS and not number.is_integer():
        raise RecipeError(f"'training.{key}' must be a whole number; got {value!r}.")


@functools.cache
def training_argument_fields() -> frozenset[str]:
    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


def validate_training_section(training: dict[str, Any]) -> None:
    """Reject unknown, managed and impossible keys without building anything heavy."""
    valid = training_argument_fields()
    for key, value in training.items():
        if key in MANAGED:
            hint = _MANAGED_HINTS.get(key, "use the 'output' section instead")
            raise RecipeError(f"'training.{key}' is set by hf-transfer; {hint}.")
        if not isinstance(key, str) or key not in valid:
            raise unknown_key_error(str(key), "training.", valid)
        if key in _RANGES:
            _check_number(key, value)
    if training.get("max_steps") == 0:  # Trainer would run one step and write a finished-looking run
        raise RecipeError("'training.max_steps' = 0 trains nothing; remove it (train num_train_epochs) or set a "
                          "positive number of optimizer steps.")


def default_num_workers() -> int:
    """Data-loader worker processes for image decoding and augmentation.

    With a GPU the CPU is free for decoding: up to 8 workers, one core left to the training process.
    Without one, every core already runs the model's own threads, and a worker competing with them
    stalls the whole step (measured on 2 cores: MobileNetV2 at 0.75x a raw loop, 1.0x inline); decoding
    a small image inline costs a few percent of a CPU training step, so few-core CPU runs decode inline.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.cuda.is_available():
        return max(1, min(8, cores - 1)) if cores > 1 else 0
    return 0 if cores <= 4 else min(4, cores // 8 + 1)


def bf16_pays() -> bool:
    """bf16 autocast by default only on GPUs with bf16 arithmetic (Ampere and later).

    On CPUs without native bf16 (no AVX512-BF16/AMX) it is emulated: MobileNetV2 trained at 1.1 img/s
    instead of 31 on the 2-core development machine. ``training.bf16``/``fp16`` in a recipe always win.
    """
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def accelerator_available() -> bool:
    """A CUDA, MPS or XPU device that ``TrainingArguments`` would train on."""
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available())


def multi_process_cpu() -> bool:
    """Several processes (torchrun) and no accelerator: DDP over gloo on the CPU."""
    return not accelerator_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def task_training_defaults(task) -> dict[str, Any]:
    """The task's ``training`` defaults, with ``dataloader_num_workers: auto`` resolved for this machine."""
    defaults = dict(task.training_defaults)
    if defaults.get("dataloader_num_workers") == "auto":
        defaults["dataloader_num_workers"] = default_num_workers()
    return defaults


def distributed_state():
    """accelerate's process state, the same one ``TrainingArguments`` will build.

    accelerate starts a multi-process group on CPU only when told it runs on the CPU; without that,
    every torchrun process believes it is the only one and all of them write the output folder.
    """
    from accelerate import PartialState

    return PartialState(cpu=multi_process_cpu())


def build_training_arguments(training: dict[str, Any], output_dir: Path, task_defaults: dict[str, Any]):
    """Merge defaults, the task's defaults and the recipe's values into ``TrainingArguments``."""
    from transformers import TrainingArguments

    values = {**TRANSFER_DEFAULTS, **task_defaults, **training}
    values.update(output_dir=str(output_dir), remove_unused_columns=False, push_to_hub=False)
    if multi_process_cpu():
        values.setdefault("use_cpu", True)
    if "dataloader_pin_memory" not in training:  # pinning only pays (and only works) with a GPU
        import torch

        values["dataloader_pin_memory"] = torch.cuda.is_available()
    if "bf16" not in training and "fp16" not in training and bf16_pays():
        values["bf16"] = True
    if values.get("dataloader_num_workers") and "dataloader_persistent_workers" not in training:
        values["dataloader_persistent_workers"] = True  # no worker start-up again at every epoch and evaluation
    if "metric_for_best_model" in training and "greater_is_better" not in training:  # a loss is lower-is-better
        values["greater_is_better"] = not str(values["metric_for_best_model"]).endswith("loss")
    if values.get("eval_strategy") != values.get("save_strategy") and values.get("load_best_model_at_end"):
        values["save_strategy"] = values["eval_strategy"]
    try:
        return TrainingArguments(**values)
    except (TypeError, ValueError, ImportError) as error:
        raise RecipeError(f"Invalid 'training' section: {shorten(str(error))}") from None


def shorten(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for values and library messages quoted in an error."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def evaluation_arguments(output_dir: Path | str, batch_size: int):
    """``TrainingArguments`` for a prediction-only ``Trainer`` (``evaluate``, the forgetting report)."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(output_dir), per_device_eval_batch_size=batch_size, report_to="none",
                             remove_unused_columns=False, dataloader_num_workers=0,
                             dataloader_pin_memory=torch.cuda.is_available())
