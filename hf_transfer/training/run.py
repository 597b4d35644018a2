"""One run, ``run_single(recipe)``: data -> model -> strategy -> Trainer -> evaluation -> model folder and card.

Runs made of runs (stages, folds, learning curves, the from-scratch baseline, backbone selection) live in
``hf_transfer.runs`` and call this one; it knows nothing of them.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import ExitStack
from functools import partial
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn
from transformers import EarlyStoppingCallback, PreTrainedModel, set_seed

from ..data.memo import MemoisedSplit
from ..data.prepare import LABEL, PreparedData, column_values, prepare_data
from ..data.validation import skipped_report
from ..errors import RecipeError, TrainingInterrupted
from ..hub import check_push_target
from ..evaluation.extra import ExtraMetricSet
from ..evaluation.metrics import metrics_for_trainer
from ..features import CachedInputs, build_cached_inputs, collate_features
from ..methods import Method, create_method
from ..methods.preflight import method_preflight
from ..models.layout import discover_layout
from ..recipe import Recipe
from ..strategies import create_strategy
from ..tasks.base import get_task
from .arguments import build_training_arguments, distributed_state, task_training_defaults
from .budget import TimeBudgetCallback, budget_callback
from .checkpoints import CheckpointManifest, last_complete_checkpoint
from .distributed import METRICS_KEY, ProcessLayout, check_launch
from .export import write_run_outputs
from .guards import GracefulStop, NonFiniteLossGuard
from .outputs import RunFolder
from ..evaluation.predict import evaluate_split
from .preflight import TrainingPlan, preflight_training
from .threads import ThreadRecheck, choose_threads, local_processes, torch_threads
from .trainer import TransferTrainer

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """What a run produced: where it lives, its metrics and the trained model."""

    output_dir: Path
    metrics: dict[str, Any]
    model: PreTrainedModel | None = field(default=None, repr=False)
    trainer: TransferTrainer | None = field(default=None, repr=False)


@dataclass
class RunBuild:
    """A ready ``TransferTrainer`` and what the run needs from its build after training."""

    trainer: TransferTrainer
    model: nn.Module
    """The model that is saved and returned: with a feature cache, the full model around the head the trainer
    trains on cached features (they share the head's modules)."""
    test_dataset: Any
    feature_cache: CachedInputs | None
    method: Method | None
    loss_guard: NonFiniteLossGuard
    stop: GracefulStop
    class_weights: dict[str, float] | None = None
    """The weight of each label in the training loss (``data.class_weights``), as the trainer uses them."""
    budget: TimeBudgetCallback | None = None
    """``training.time_budget``: what it measured and chose, for ``metrics.json``."""
    input_report: dict[str, Any] = field(default_factory=dict)
    """``ModelInputs.report``: what the task measured of its inputs, for ``metrics.json`` (``inputs``)."""
    groups: dict[str, list[int]] = field(default_factory=dict)
    """``ModelInputs.groups``: evaluation splits whose rows are parts of examples."""


def resolve_class_weights(setting: str | list[float] | None, data: PreparedData) -> dict[str, float] | None:
    """``data.class_weights`` for these splits: label -> weight, in label order; None when the recipe sets none.

    ``balanced`` is scikit-learn's ``compute_class_weight("balanced")`` over the classes of the prepared train
    split: ``n_samples / (n_classes * count)``, so that the mean weight per training example is 1. A label with no
    training example gets weight 0 (and a warning): no hard label ever carries it, and under mixup's label
    smoothing it adds nothing. A list must hold one weight per label, else a ``RecipeError`` before training.
    """
    names = data.label_names
    if setting is None:
        return None
    if isinstance(setting, str):  # "balanced"; the recipe rejects any other string
        counts = np.bincount(np.asarray(column_values(data.train, LABEL), dtype=np.int64), minlength=len(names))
        present = int(np.count_nonzero(counts))
        absent = [name for name, count in zip(names, counts) if not count]
        if absent:
            logger.warning("data.class_weights: balanced: %d label(s) have no training example and get weight 0: %s",
                           len(absent), ", ".join(absent[:20]) + (" ..." if len(absent) > 20 else ""))
        total = int(counts.sum())
        return {name: round(total / (present * int(count)), 6) if count else 0.0 for name, count in zip(names, counts)}
    if len(setting) != len(names):
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise RecipeError(f"'data.class_weights' lists {len(setting)} weight(s) but the data has {len(names)} labels "
                          f"({listed}): give one weight per label, in this order, or 'balanced'.")
    return {name: float(weight) for name, weight in zip(names, setting)}


def parameter_counts(trained: nn.Module, whole: nn.Module) -> dict[str, int]:
    """Parameters the optimizer updates (``trained``: the head alone on cached features) and in the whole model."""
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(sum(p.numel() for p in whole.parameters()))}


def build_trainer(recipe: Recipe, data: PreparedData, checkpoints: Path) -> RunBuild:
    """Everything up to a ready ``Trainer``: model, strategy, preprocessing and arguments."""
    started = time.perf_counter()  # a time budget counts model loading and feature extraction too
    set_seed(recipe.seed)  # here, not earlier: pre-flight work must not change which head the run starts from
    task = get_task(recipe.task)
    model, processor = task.load_model(recipe, data.label_names)
    strategy = create_strategy(recipe.strategy.name, recipe.strategy.options, discover_layout(model),
                               recipe.strategy.learning_rates)
    strategy.prepare(model)
    with distributed_state().main_process_first():  # rank 0 fills the datasets cache, the others reuse it
        inputs = task.model_inputs(recipe, data, model, processor)
    args = build_training_arguments(recipe.training, checkpoints, task_training_defaults(task))
    loss_guard = NonFiniteLossGuard(on_nonfinite=recipe.evaluation.on_nonfinite_loss)
    stop = GracefulStop()
    method = create_method(recipe.method.name, recipe.method.options) if recipe.method.name else None
    callbacks = [*strategy.callbacks(), *(method.callbacks() if method else []), loss_guard, stop,
                 CheckpointManifest()]
    if recipe.evaluation.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(recipe.evaluation.early_stopping_patience))
    budget = budget_callback(recipe.training, data.sizes(), started)
    if budget is not None:
        callbacks.append(budget)
    class_weights = resolve_class_weights(recipe.data.class_weights, data)
    cached = build_cached_inputs(recipe, data, model, processor, strategy, inputs, args)
    if cached is not None:  # the head trains on cached features: no decoding, no backbone pass
        args = build_training_arguments({**recipe.training, "dataloader_num_workers": 0,
                                         "train_sampling_strategy": "random"}, checkpoints, task_training_defaults(task))
        inputs = replace(inputs, train=cached.train, validation=cached.validation, test=cached.test,
                         collator=collate_features, mixup=None, eval_decodes=False)  # rows, report, groups stay
    elif inputs.eval_decodes and recipe.data.eval_memory_mb and not args.dataloader_num_workers:
        inputs = replace(inputs, validation=MemoisedSplit(inputs.validation, recipe.data.eval_memory_mb))
    trainer = TransferTrainer(
        model=cached.model if cached else model, args=args, train_dataset=inputs.train,
        eval_dataset=inputs.validation, data_collator=inputs.collator, processing_class=processor,
        compute_metrics=metrics_for_trainer(len(data.label_names)), callbacks=callbacks,
        strategy=strategy, mixup=inputs.mixup, loss_guard=loss_guard, method=method,
        class_weights=None if class_weights is None else list(class_weights.values()))
    if method is not None:
        method.setup(recipe, data, trainer)
    return RunBuild(trainer=trainer, model=model, test_dataset=inputs.test, feature_cache=cached, method=method,
                    loss_guard=loss_guard, stop=stop, class_weights=class_weights, budget=budget,
                    input_report=inputs.report, groups=inputs.groups)


def _train_and_evaluate(recipe: Recipe, data: PreparedData, folder: RunFolder, resume_from: str | None,
                        extra: ExtraMetricSet = ExtraMetricSet()) -> tuple[RunBuild, dict[str, Any]]:
    build = build_trainer(recipe, data, folder.checkpoints)
    args = build.trainer.args
    threads = choose_threads(args.dataloader_num_workers, local_processes(args.world_size), build.feature_cache is not None)
    recheck = ThreadRecheck(threads) if threads.ceiling else None
    if recheck is not None:
        build.trainer.add_callback(recheck)
    with torch_threads(threads):
        build, metrics = _trained(build, recipe, data, folder, resume_from, extra)
    metrics["train"]["torch_threads"] = {**threads.to_metrics(), **(recheck.report() if recheck else {})}
    return build, metrics


def _trained(build: RunBuild, recipe: Recipe, data: PreparedData, folder: RunFolder, resume_from: str | None,
             extra: ExtraMetricSet = ExtraMetricSet()) -> tuple[RunBuild, dict[str, Any]]:
    trainer = build.trainer
    layout = ProcessLayout.of(trainer.accelerator)
    logger.info("%s", layout.describe())
    train_output = trainer.train(resume_from_checkpoint=resume_from)
    if build.stop.received is not None:
        name = signal.Signals(build.stop.received).name
        raise TrainingInterrupted(f"Training stopped by {name} at step {trainer.state.global_step}; a checkpoint is "
                                  f"in {folder.checkpoints}. Run the same command again to resume.", build.stop.received)
    metrics: dict[str, Any] = {"labels": data.label_names}
    if data.skipped:
        metrics["skipped"] = skipped_report(data.skipped)
    if data.missing:  # data.missing_modality: rows without one of the inputs, by split and input
        metrics["missing_inputs"] = data.missing
    if build.input_report:
        metrics["inputs"] = build.input_report
    metrics["parameters"] = parameter_counts(trainer.model, build.model)
    metrics["validation"] = evaluate_split(trainer, trainer.eval_dataset, data.label_names, "validation", extra,
                                           build.groups.get("validation"))
    if build.test_dataset is not None:
        metrics["test"] = evaluate_split(trainer, build.test_dataset, data.label_names, "test", extra,
                                         build.groups.get("test"))
    if build.method is not None:
        metrics.update(build.method.extra_metrics(trainer, data.label_names))
    metrics["train"] = {
        "runtime_s": round(train_output.metrics.get("train_runtime", 0.0), 2),
        "samples_per_s": round(train_output.metrics.get("train_samples_per_second", 0.0), 2),
        "epochs": float(trainer.state.epoch or 0), "steps": int(trainer.state.global_step),
        "best_checkpoint_metric": trainer.state.best_metric,
    }
    metrics[METRICS_KEY] = layout.to_metrics()
    if build.class_weights is not None:  # data.class_weights: the training loss's weight per label
        metrics["train"]["class_weights"] = build.class_weights
    if build.budget is not None:  # training.time_budget: the step time measured and the steps chosen
        metrics["train"]["time_budget"] = build.budget.report()
    if build.loss_guard.skipped_steps:  # evaluation.on_nonfinite_loss: skip
        metrics["train"]["skipped_nonfinite_steps"] = list(build.loss_guard.skipped_steps)
    if build.feature_cache is not None:
        metrics["feature_cache"] = build.feature_cache.report()
    return build, metrics


#: Called after training, before anything is written: ``(build, metrics) -> entries added to metrics``.
#: Runs made of runs (``hf_transfer.runs``) pass it down; the trained weights are in ``build.model``.
ExtraMetrics = Callable[[RunBuild, dict[str, Any]], dict[str, Any]]


def protected_paths(recipe: Recipe) -> dict[str, Path]:
    """Local inputs of the run (data folders, files) that ``output.dir`` must neither be nor contain."""
    found: dict[str, Path] = {}
    sections = [("data", recipe.data)]
    options = recipe.method.options
    for name in (item.name for item in fields(options)) if is_dataclass(options) else ():
        section = getattr(options, name)  # the method's own data: DANN's target, distillation's unlabelled
        if hasattr(section, "path"):
            sections.append((f"method.{name}", section))
    for i, stage in enumerate(recipe.stages):
        sections.append((f"stages.{i}.data", stage.recipe.data))
    for where, section in sections:
        path = Path(str(section.path)).expanduser() if section.path else None
        if path is not None and path.exists():
            found[f"{where}.path"] = path
    return found


def model_paths(recipe: Recipe) -> dict[str, Path]:
    """Local model folders the run reads (backbones, teacher): ``output.dir`` may be neither one nor inside one."""
    found: dict[str, Path] = {}
    references = get_task(recipe.task).model_references(recipe)
    for where, name in (*references.items(), ("method.teacher", getattr(recipe.method.options, "teacher", None))):
        path = Path(str(name)).expanduser() if name else None
        if path is not None and path.is_dir():
            found[where] = path
    return found


def run_folder(recipe: Recipe) -> RunFolder:
    return RunFolder(recipe.output.dir, overwrite=recipe.output.overwrite, protected=protected_paths(recipe),
                     sources=model_paths(recipe))


def preflight_run(recipe: Recipe) -> tuple[RunFolder, TrainingPlan]:
    """The checks that need no data, cheapest first: output folder, push target, model source, training arguments.

    Nothing is written; runs made of runs call it before their sub-runs train.
    """
    check_launch(distributed_state(), recipe.training)  # one process where several were asked for, FSDP
    task = get_task(recipe.task)
    task.check_recipe(recipe)
    folder = run_folder(recipe)
    if distributed_state().is_main_process:
        folder.check(recipe.to_yaml())
        check_push_target(recipe.output.hub_model_id, recipe.output.push_to_hub)
    task.resolve_sources(recipe)
    return folder, preflight_training(recipe)


def _write_extra_outputs(build: RunBuild, folder: Path) -> None:
    """What the strategy (lora's adapter) and the method (DANN's source statistics) save beside the model."""
    build.trainer.strategy.write_outputs(folder)
    if build.method is not None:
        build.method.write_outputs(folder)


def run_single(recipe: Recipe, write_card: bool = True, extra_metrics: ExtraMetrics | None = None,
               data: PreparedData | None = None) -> FinetuneResult:
    """One training run; ``data`` replaces the recipe's own splits (cross-validation folds, curve fractions)."""
    seed = recipe.seed
    task = get_task(recipe.task)
    state = distributed_state()
    # Pre-flight, cheapest first: output folder, model config, then data (rows included); nothing is written yet.
    folder, plan = preflight_run(recipe)
    if data is None:
        with state.main_process_first():
            data = prepare_data(recipe.data, task.input_roles, seed)
    plan.check_split_sizes(data.sizes())
    if short := plan.short_run_warning(data.sizes()):  # fewer than ~50 optimizer steps: say so before training
        logger.warning(short)
    method_preflight(recipe, data.label_names)
    plan.extra_metrics.check(len(data.label_names))  # evaluation.extra_metrics: args that fail stop here
    resolve_class_weights(recipe.data.class_weights, data)  # a list of the wrong length stops here
    logger.info("Data: %s; %d labels", data.sizes(), len(data.label_names))
    with ExitStack() as claim:
        with state.main_process_first():  # rank 0 claims the folder; the others then find the same checkpoint
            if state.is_main_process:
                resume_from = claim.enter_context(folder.claimed(recipe.to_yaml()))
            else:
                resume_from = last_complete_checkpoint(folder.checkpoints)
        build, metrics = _train_and_evaluate(recipe, data, folder, resume_from, plan.extra_metrics)
        if extra_metrics is not None:
            metrics.update(extra_metrics(build, metrics))
        # The model to save, from the one measured above (lora: adapters merged into the weights, original names).
        build.model = build.trainer.strategy.export_model(build.model)
        if build.trainer.is_world_process_zero():
            write_run_outputs(build.trainer, recipe, data, metrics, folder, write_card=write_card, model=build.model,
                              extra_outputs=partial(_write_extra_outputs, build))
        build.trainer.accelerator.wait_for_everyone()
    return FinetuneResult(output_dir=folder.path, metrics=metrics, model=build.model, trainer=build.trainer)
