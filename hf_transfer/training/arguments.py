"""The recipe's ``training`` section -> ``transformers.TrainingArguments``.

Every ``TrainingArguments`` field passes through unchanged; hf-transfer only fills defaults that
suit transfer learning (evaluate and checkpoint each epoch, keep the best model, no trackers). The section is
validated with the rest of the recipe (``hf_transfer.recipe.validate_training_section``).

Tracker logs: the Trainer's ``output_dir`` is ``<output.dir>/checkpoints``, which is removed when a run finishes
(unless ``output.keep_checkpoints``), so TensorBoard must not write below it (its default,
``<output_dir>/runs/<date>_<host>``). With ``training.report_to`` naming ``tensorboard`` (or ``all`` with it
installed), the event files go to ``<output.dir>/logs`` instead: a run entry in the folder's ownership marker,
never removed at the end, appended to on resume, set aside and put back with the rest of the run on overwrite.
transformers 5 has no ``TrainingArguments.logging_dir``: its ``TensorBoardCallback`` reads the
``TENSORBOARD_LOGGING_DIR`` environment variable when the ``Trainer`` is built, so that is what is set here, for the
claimed run only (``RunFolder.claimed`` puts the previous value back when the run ends). A
``TENSORBOARD_LOGGING_DIR`` the user exported is respected: the logs go there, and the run folder does not own
them. ``training.logging_dir`` is refused. The other trackers transformers supports (wandb, mlflow, comet,
trackio, ...) write where their own library decides (usually a folder in the working directory or a server);
hf-transfer neither moves nor removes what they write.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe import OWN_TRAINING_KEYS, TIME_BUDGET
from .budget import budget_arguments, parse_time_budget
from .outputs import LOGS, TENSORBOARD_ENV, claimed_logs_dir, record

logger = logging.getLogger(__name__)

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


def default_num_workers() -> int:
    """Data-loader worker processes for image decoding and augmentation.

    With a GPU the CPU is free for decoding: up to 8 workers, one core left to the training process.
    Without one, every core already runs the model's own threads, and a worker competing with them
    stalls the whole step, while decoding a small image inline costs little of a CPU training step; so
    few-core CPU runs decode inline (the measurement is in docs/performance.md).
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.cuda.is_available():
        return max(1, min(8, cores - 1)) if cores > 1 else 0
    return 0 if cores <= 4 else min(4, cores // 8 + 1)


def bf16_pays() -> bool:
    """bf16 autocast by default only on GPUs with bf16 arithmetic (Ampere and later).

    On CPUs without native bf16 (no AVX512-BF16/AMX) it is emulated and many times slower than fp32 (see
    docs/performance.md). ``training.bf16``/``fp16`` in a recipe always win.
    """
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def accelerator_available() -> bool:
    """A CUDA, MPS or XPU device that ``TrainingArguments`` would train on."""
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available())


#: Where a launcher puts the number of processes: torchrun, then the MPI flavours accelerate's ``--mpirun_hostfile``
#: may start (the variables accelerate's own ``MULTI_CPU`` set-up reads).
WORLD_SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def multi_process_cpu() -> bool:
    """Several processes (torchrun or mpirun) and no accelerator: DDP over gloo on the CPU."""
    from accelerate.utils import get_int_from_env

    return not accelerator_available() and get_int_from_env(list(WORLD_SIZE_ENV), 1) > 1


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


#: Why ``training.logging_dir`` is refused (transformers 5 removed the field; hf-transfer chooses the folder).
LOGGING_DIR_REFUSED = ("'training.logging_dir' is not a TrainingArguments field in transformers 5; hf-transfer "
                       "writes TensorBoard logs to <output.dir>/logs (export TENSORBOARD_LOGGING_DIR to send them "
                       "elsewhere). Remove training.logging_dir.")

_OUR_LOG_DIRS: set[str] = set()
"""``TENSORBOARD_LOGGING_DIR`` values set here (one per run folder), told apart from one the user exported."""


def build_training_arguments(training: dict[str, Any], output_dir: Path, task_defaults: dict[str, Any]):
    """Merge defaults, the task's defaults and the recipe's values into ``TrainingArguments``.

    ``output_dir`` is where the Trainer saves checkpoints, ``<output.dir>/checkpoints`` for a run; when this
    process has claimed that run folder, TensorBoard logs are routed to ``<output.dir>/logs`` (module docstring).
    """
    from transformers import TrainingArguments

    if "logging_dir" in training:
        raise RecipeError(LOGGING_DIR_REFUSED)
    values = {**TRANSFER_DEFAULTS, **task_defaults, **{k: v for k, v in training.items() if k not in OWN_TRAINING_KEYS}}
    if parse_time_budget(training.get(TIME_BUDGET)) is not None:  # the length and cadence follow the budget
        values.update(budget_arguments(training))
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
        args = TrainingArguments(**values)
    except (TypeError, ValueError, ImportError) as error:
        raise RecipeError(f"Invalid 'training' section: {shorten(str(error))}") from None
    route_tracker_logs(args, Path(output_dir))
    return args


def route_tracker_logs(args, checkpoints: Path) -> Path | None:
    """Point TensorBoard at ``<run>/logs`` and list ``logs`` in the run's marker; returns that folder.

    Only when ``args.report_to`` includes ``tensorboard`` and this process has claimed the run folder around
    ``checkpoints`` (so a pre-flight check writes nothing, and the processes other than the main one, which log
    nothing, leave the marker alone). None when nothing was routed: no TensorBoard, not a claimed run folder, or a
    ``TENSORBOARD_LOGGING_DIR`` of the user's own.
    """
    if "tensorboard" not in (args.report_to or []):
        return None
    logs = claimed_logs_dir(checkpoints)
    if logs is None:
        return None
    current = os.environ.get(TENSORBOARD_ENV)
    if current and current not in _OUR_LOG_DIRS:
        logger.info("%s=%s is set: TensorBoard writes its logs there, not to %s", TENSORBOARD_ENV, current, logs)
        return None
    record(logs.parent, LOGS)
    os.environ[TENSORBOARD_ENV] = str(logs.absolute())
    _OUR_LOG_DIRS.add(str(logs.absolute()))
    return logs


def shorten(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for values and library messages quoted in an error."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."
