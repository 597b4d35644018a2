"""Pre-flight for the recipe's ``training`` section: what ``Trainer`` would find out only mid-run.

``TrainingArguments`` accepts values that fail later: a best-model metric no evaluation produces (a
``KeyError`` after the first epoch), scheduler and optimizer keyword arguments (when training starts), a
tracker that is not installed, a DeepSpeed config that is not there, fp16 without a GPU. ``preflight_training``
builds the effective arguments once, and the optimizer and LR scheduler once on a dummy parameter, and turns
every failure into a ``RecipeError`` naming the field. It reads no data and writes nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import RecipeError
from ..evaluation.extra import ExtraMetricSet, load_extra_metrics
from ..evaluation.metrics import HEADLINE
from ..recipe import TIME_BUDGET, Recipe
from ..tasks.base import get_task
from .arguments import (accelerator_available, build_training_arguments, multi_process_cpu, shorten,
                        task_training_defaults)
from .budget import FEW_STEPS, describe, parse_time_budget
from .outputs import CHECKPOINTS

logger = logging.getLogger(__name__)

#: Every metric an evaluation during training logs (``eval_`` + these); ``metric_for_best_model`` names one.
EVAL_METRICS = ("loss", *HEADLINE)
#: Speed of bf16 autocast against fp32 on a CPU without native bf16, as measured in docs/performance.md.
CPU_BF16_SPEED = "0.12x"


@dataclass(frozen=True)
class TrainingPlan:
    """The effective ``TrainingArguments`` of a recipe and what pre-flight found worth a warning."""

    args: Any
    warnings: tuple[str, ...] = ()
    extra_metrics: ExtraMetricSet = field(default_factory=ExtraMetricSet)
    """``evaluation.extra_metrics``, loaded once here and computed after training."""
    time_budget: float | None = None
    """``training.time_budget`` in seconds: the run's length is chosen while it trains (``training.budget``)."""

    def total_steps(self, train_size: int) -> int:
        """Optimizer steps of the whole run (with a time budget: at most this many)."""
        args = self.args
        return args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * self.steps_per_epoch(train_size))

    def short_run_warning(self, sizes: Mapping[str, int]) -> str | None:
        """One line when the run will take fewer than ``FEW_STEPS`` optimizer steps, with what to change; a run
        with a time budget says so once its length is chosen."""
        if self.time_budget is not None or "train" not in sizes:
            return None
        steps = self.total_steps(sizes["train"])
        if steps >= FEW_STEPS:
            return None
        args = self.args
        return (f"This run takes {steps} optimizer steps ({sizes['train']} training examples, "
                f"{args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size} per step, "
                f"{args.num_train_epochs:g} epochs): fewer than {FEW_STEPS} rarely move a pretrained model far. Train "
                "more epochs (training.num_train_epochs), use a smaller training.per_device_train_batch_size, or set "
                "training.time_budget (e.g. 5m).")

    def summary(self, sizes: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The essentials ``hf-transfer check`` reports: device, precision, batch sizes, length of training."""
        args = self.args
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        report = {
            "device": str(args.device), "processes": args.world_size, "precision": precision,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "per_device_eval_batch_size": args.per_device_eval_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "examples_per_step": per_step,
            "num_train_epochs": args.num_train_epochs, "max_steps": args.max_steps,
            "learning_rate": args.learning_rate, "lr_scheduler_type": _name(args.lr_scheduler_type),
            "optim": _name(args.optim), "eval_strategy": _name(args.eval_strategy),
            "save_strategy": _name(args.save_strategy), "metric_for_best_model": args.metric_for_best_model,
            "greater_is_better": args.greater_is_better, "dataloader_num_workers": args.dataloader_num_workers,
        }
        if sizes and "train" in sizes:
            report["steps_per_epoch"] = self.steps_per_epoch(sizes["train"])
            report["total_steps"] = self.total_steps(sizes["train"])
        if self.time_budget is not None:  # total_steps is then an upper bound; the run chooses its length
            report["time_budget"] = describe(self.time_budget)
        if self.warnings:
            report["warnings"] = list(self.warnings)
        if short := self.short_run_warning(sizes or {}):
            report["short_run"] = short
        return report

    def steps_per_epoch(self, train_size: int) -> int:
        """Optimizer steps per epoch, counted as ``Trainer`` does (batches per process, then accumulation)."""
        args = self.args
        rounding = math.floor if args.dataloader_drop_last else math.ceil
        batches = rounding(rounding(train_size / args.per_device_train_batch_size) / args.world_size)
        return math.ceil(batches / args.gradient_accumulation_steps)

    def check_split_sizes(self, sizes: Mapping[str, int]) -> None:
        """``dataloader_drop_last`` must leave at least one batch of every split it is used for."""
        args = self.args
        if not args.dataloader_drop_last:
            return
        for split, batch in (("train", args.per_device_train_batch_size),
                             ("validation", args.per_device_eval_batch_size)):
            size, needed = sizes.get(split), batch * args.world_size
            if size is not None and size < needed:
                field = "per_device_train_batch_size" if split == "train" else "per_device_eval_batch_size"
                raise RecipeError(
                    f"'training.dataloader_drop_last' is true and the {split} split has {size} examples, fewer than "
                    f"one batch ({needed}): every {split} batch would be dropped. Remove dataloader_drop_last or "
                    f"lower training.{field}.")


def preflight_training(recipe: Recipe, sizes: Mapping[str, int] | None = None) -> TrainingPlan:
    """Build the effective ``TrainingArguments``, optimizer and LR scheduler once; ``RecipeError`` names the field.

    ``sizes`` (split -> examples), when known, also checks what depends on them (``dataloader_drop_last``).
    """
    training = recipe.training
    _check_deepspeed(training.get("deepspeed"))
    _check_report_to(training.get("report_to"))
    warnings = _check_precision(training)
    output_dir = Path(recipe.output.dir) / CHECKPOINTS
    args = build_training_arguments(training, output_dir, task_training_defaults(get_task(recipe.task)))
    if args.fp16 and args.device.type == "cpu":
        raise RecipeError(f"'training.fp16' is true but training runs on the CPU ({_why_cpu(training)}): fp16 needs a "
                          "GPU. Remove training.fp16 (the CPU trains in fp32).")
    _check_best_metric(args.metric_for_best_model)
    _check_optimizer_and_scheduler(args)
    plan = TrainingPlan(args=args, warnings=tuple(warnings),
                        extra_metrics=load_extra_metrics(recipe.evaluation.extra_metrics),
                        time_budget=parse_time_budget(training.get(TIME_BUDGET)))
    if sizes is not None:
        plan.check_split_sizes(sizes)
    for warning in warnings:
        logger.warning(warning)
    return plan


def _name(value: Any) -> Any:
    """An enum's value (``cosine``, not ``SchedulerType.COSINE``), as a recipe writes it."""
    return getattr(value, "value", value)


def _why_cpu(training: Mapping[str, Any]) -> str:
    return "training.use_cpu is true" if training.get("use_cpu") else "no GPU was found"


def _check_deepspeed(config: Any) -> None:
    if not config:
        return
    if importlib.util.find_spec("deepspeed") is None:
        raise RecipeError("'training.deepspeed' is set but the deepspeed package is not installed: "
                          "pip install deepspeed, or remove training.deepspeed.")
    if isinstance(config, str) and not config.lstrip().startswith("{") and not Path(config).is_file():
        raise RecipeError(f"'training.deepspeed' = {shorten(config, 80)!r}: no such config file. Give the path of a "
                          "DeepSpeed JSON config (relative to where you run the command) or a mapping.")


def _check_report_to(report_to: Any) -> None:
    if report_to is None:
        return
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [report_to] if isinstance(report_to, str) else report_to
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise RecipeError(f"'training.report_to' must be a tracker name or a list of them; got "
                          f"{shorten(repr(report_to), 80)}.")
    installed = get_available_reporting_integrations()
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(f"'training.report_to' names {shorten(name, 40)!r}, not a tracker transformers knows. "
                              f"Use one of: none, {', '.join(sorted(INTEGRATION_TO_CALLBACK))}.")
        if name not in installed:
            raise RecipeError(f"'training.report_to' names {name!r}, which is not installed: install it (e.g. pip "
                              f"install {name}) or set training.report_to: none.")


def _check_precision(training: Mapping[str, Any]) -> list[str]:
    """Refuse bf16 where ``TrainingArguments`` would, with a clearer message; warn where it runs emulated."""
    if training.get("fp16") and training.get("bf16"):
        raise RecipeError("'training.fp16' and 'training.bf16' are both true; choose one.")
    if not training.get("bf16"):
        return []
    on_cpu = training.get("use_cpu") or not accelerator_available()
    if not on_cpu:
        return []
    if not training.get("use_cpu") and not multi_process_cpu():  # TrainingArguments needs use_cpu for CPU bf16
        raise RecipeError("'training.bf16' is true but no GPU was found. Remove training.bf16 (hf-transfer turns bf16 "
                          "on where the GPU has it), or set training.use_cpu: true to emulate it on the CPU, slowly.")
    if _cpu_has_native_bf16():
        return []
    return [f"training.bf16 on a CPU without native bf16 arithmetic (no AVX512-BF16/AMX): bf16 is emulated and "
            f"trained at {CPU_BF16_SPEED} the fp32 speed in docs/performance.md. Remove training.bf16 to train in fp32."]


def _cpu_has_native_bf16() -> bool:
    """AMX tiles (or AVX512-BF16) run bf16 matrix products natively; without them oneDNN emulates them."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's probes (x86 only)
    return any(bool(getattr(torch.cpu, name)()) for name in checks if hasattr(torch.cpu, name))


def _check_best_metric(name: str | None) -> None:
    if name is None:
        return
    bare = name[len("eval_"):] if name.startswith("eval_") else name
    if bare not in EVAL_METRICS:
        from difflib import get_close_matches

        close = get_close_matches(bare, EVAL_METRICS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RecipeError(f"'training.metric_for_best_model' = {shorten(name, 60)!r} is not a metric the evaluation "
                          f"logs.{hint} Use one of: {', '.join(EVAL_METRICS)} (with or without 'eval_').")


def _check_optimizer_and_scheduler(args) -> None:
    """Build the optimizer and the LR scheduler on one dummy parameter, the way ``TransferTrainer`` will."""
    from transformers import Trainer
    from transformers.optimization import get_scheduler

    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    pairs = [item for item in (args.optim_args or "").replace(" ", "").split(",") if item]
    if any(item.count("=") != 1 for item in pairs):
        raise RecipeError(f"'training.optim_args' = {shorten(args.optim_args, 80)!r} must read 'key=value,key=value'.")
    try:
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, None)
        _check_optim_args_used(args, kwargs, optimizer_cls)
        optimizer = optimizer_cls([{"params": [parameter]}], **kwargs)
    except RecipeError:
        raise
    except Exception as error:  # anything an optimizer or transformers' parser raises on a bad value
        field = "optim_args" if args.optim_args else "optim"
        raise RecipeError(f"'training.{field}' = {shorten(str(args.optim_args or args.optim), 80)!r} does not build "
                          f"the {_name(args.optim)} optimizer: {shorten(str(error), 120)}. Fix or remove it.") from None
    steps = args.max_steps if args.max_steps > 0 else 100
    try:
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer=optimizer,
                                  num_warmup_steps=args.get_warmup_steps(steps), num_training_steps=steps,
                                  scheduler_specific_kwargs=args.lr_scheduler_kwargs)
        optimizer.step()
        scheduler.step(0.0) if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else scheduler.step()
    except Exception as error:
        field = "lr_scheduler_kwargs" if args.lr_scheduler_kwargs else "lr_scheduler_type"
        raise RecipeError(f"'training.{field}' = {shorten(repr(args.lr_scheduler_kwargs or args.lr_scheduler_type), 80)}"
                          f" does not build the {_name(args.lr_scheduler_type)} LR scheduler: {shorten(str(error), 120)}. "
                          "Fix or remove it.") from None


def _check_optim_args_used(args, kwargs: dict[str, Any], optimizer_cls) -> None:
    """Every ``optim_args`` key must reach the optimizer: transformers drops the ones it does not know, silently."""
    import inspect

    from transformers import Trainer

    if not args.optim_args:
        return
    pairs = [item for item in args.optim_args.replace(" ", "").split(",") if item]
    try:
        accepted = set(inspect.signature(optimizer_cls).parameters)
    except (TypeError, ValueError):
        accepted = set()
    for item in pairs:
        key = item.partition("=")[0]
        if key in kwargs or key in accepted:
            continue
        others = ",".join(other for other in pairs if other != item)
        _, without = Trainer.get_optimizer_cls_and_kwargs(_with_optim_args(args, others or None), None)
        if without == kwargs:
            raise RecipeError(f"'training.optim_args' key {shorten(key, 40)!r} has no effect on the {_name(args.optim)} "
                              "optimizer; remove it or check its name.")


def _with_optim_args(args, optim_args: str | None):
    import copy

    other = copy.copy(args)
    other.optim_args = optim_args
    return other
