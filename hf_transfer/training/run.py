"""``finetune(recipe)``: data -> model -> strategy -> Trainer -> evaluation -> model folder and card."""

from __future__ import annotations

import json
import logging
import signal
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from transformers import EarlyStoppingCallback, PreTrainedModel, set_seed

from ..data.memo import MemoisedSplit
from ..data.prepare import PreparedData, prepare_data
from ..data.validation import skipped_report
from ..errors import TrainingInterrupted
from ..hub import check_push_target
from ..features import build_cached_inputs, collate_features
from ..evaluation.metrics import classification_report, metrics_for_trainer
from ..methods import create_method
from ..methods.preflight import method_preflight
from ..models.layout import discover_layout
from ..models.sources import resolve_model_source
from ..recipe import AUTO, Recipe
from ..strategies import create_strategy
from ..tasks.base import ModelInputs, get_task
from .arguments import build_training_arguments, distributed_state, task_training_defaults
from .checkpoints import CheckpointManifest, last_complete_checkpoint
from .export import write_run_outputs
from .guards import GracefulStop, NonFiniteLossGuard
from .outputs import METRICS_FILE, RunFolder, record
from .preflight import preflight_training
from .trainer import TransferTrainer

logger = logging.getLogger(__name__)

SCRATCH = "scratch"


@dataclass
class FinetuneResult:
    """What a run produced: where it lives, its metrics and the trained model."""

    output_dir: Path
    metrics: dict[str, Any]
    model: PreTrainedModel | None = field(default=None, repr=False)
    trainer: TransferTrainer | None = field(default=None, repr=False)


def evaluate_split(trainer: TransferTrainer, dataset, label_names: list[str], prefix: str) -> dict[str, Any]:
    """Predict a whole split and return the full classification report (with the loss)."""
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    report = classification_report(output.label_ids, np.argmax(logits, axis=-1), label_names)
    if f"{prefix}_loss" in output.metrics:
        report["loss"] = float(output.metrics[f"{prefix}_loss"])
    return report


def build_trainer(recipe: Recipe, data: PreparedData, checkpoints: Path) -> TransferTrainer:
    """Everything up to a ready ``Trainer``: model, strategy, preprocessing and arguments."""
    task = get_task(recipe.task)
    model, processor = task.load_model(recipe, data.label_names)
    strategy = create_strategy(recipe.strategy.name, recipe.strategy.options, discover_layout(model))
    strategy.prepare(model)
    with distributed_state().main_process_first():  # rank 0 fills the datasets cache, the others reuse it
        inputs = task.model_inputs(recipe, data, model, processor)
    args = build_training_arguments(recipe.training, checkpoints, task_training_defaults(task))
    loss_guard = NonFiniteLossGuard(on_nonfinite=recipe.evaluation.on_nonfinite_loss)
    method = create_method(recipe.method.name, recipe.method.options) if recipe.method.name else None
    callbacks = [*strategy.callbacks(), *(method.callbacks() if method else []), loss_guard, GracefulStop(),
                 CheckpointManifest()]
    if recipe.evaluation.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(recipe.evaluation.early_stopping_patience))
    cached = build_cached_inputs(recipe, data, model, processor, strategy, inputs, args)
    if cached is not None:  # the head trains on cached features: no decoding, no backbone pass
        args = build_training_arguments({**recipe.training, "dataloader_num_workers": 0,
                                         "train_sampling_strategy": "random"}, checkpoints, task_training_defaults(task))
        inputs = ModelInputs(train=cached.train, validation=cached.validation, test=cached.test,
                             collator=collate_features)
    elif inputs.eval_decodes and recipe.data.eval_memory_mb and not args.dataloader_num_workers:
        inputs = replace(inputs, validation=MemoisedSplit(inputs.validation, recipe.data.eval_memory_mb))
    trainer = TransferTrainer(
        model=cached.model if cached else model, args=args, train_dataset=inputs.train,
        eval_dataset=inputs.validation, data_collator=inputs.collator, processing_class=processor,
        compute_metrics=metrics_for_trainer(len(data.label_names)), callbacks=callbacks,
        strategy=strategy, mixup=inputs.mixup, loss_guard=loss_guard, method=method)
    trainer.test_dataset = inputs.test
    trainer.feature_cache = cached
    if method is not None:
        method.setup(recipe, data, trainer)
    return trainer


def _train_and_evaluate(recipe: Recipe, data: PreparedData, folder: RunFolder, resume_from: str | None):
    trainer = build_trainer(recipe, data, folder.checkpoints)
    train_output = trainer.train(resume_from_checkpoint=resume_from)
    stop = next(c for c in trainer.callback_handler.callbacks if isinstance(c, GracefulStop))
    if stop.received is not None:
        name = signal.Signals(stop.received).name
        raise TrainingInterrupted(f"Training stopped by {name} at step {trainer.state.global_step}; a checkpoint is "
                                  f"in {folder.checkpoints}. Run the same command again to resume.", stop.received)
    metrics: dict[str, Any] = {"labels": data.label_names}
    if data.skipped:
        metrics["skipped"] = skipped_report(data.skipped)
    metrics["validation"] = evaluate_split(trainer, trainer.eval_dataset, data.label_names, "validation")
    if trainer.test_dataset is not None:
        metrics["test"] = evaluate_split(trainer, trainer.test_dataset, data.label_names, "test")
    if trainer.method is not None:
        metrics.update(trainer.method.extra_metrics(trainer, data.label_names))
    metrics["train"] = {
        "runtime_s": round(train_output.metrics.get("train_runtime", 0.0), 2),
        "samples_per_s": round(train_output.metrics.get("train_samples_per_second", 0.0), 2),
        "epochs": float(trainer.state.epoch or 0), "steps": int(trainer.state.global_step),
        "best_checkpoint_metric": trainer.state.best_metric,
    }
    if trainer.loss_guard.skipped_steps:  # evaluation.on_nonfinite_loss: skip
        metrics["train"]["skipped_nonfinite_steps"] = list(trainer.loss_guard.skipped_steps)
    if trainer.feature_cache is not None:  # the trained head lives in the full model, which is what gets saved
        metrics["feature_cache"] = trainer.feature_cache.report()
        trainer.model = trainer.model_wrapped = trainer.feature_cache.model.model
    return trainer, metrics


def _scratch_baseline(recipe: Recipe, folder: RunFolder) -> dict[str, Any]:
    """The same recipe from random initialisation, in ``<output>/scratch``."""
    overrides = {"model.pretrained": False, "output.dir": str(folder.path / SCRATCH),
                 "output.push_to_hub": False, "output.overwrite": False, "evaluation.compare_to_scratch": False,
                 "evaluation.cross_validate": None, "evaluation.learning_curve": None,
                 **recipe.evaluation.scratch_overrides}
    scratch_recipe = recipe.replace(overrides)
    record(folder.path, SCRATCH)  # an overwrite set the old baseline aside with the rest of the run
    if RunFolder(scratch_recipe.output.dir).is_finished():
        return json.loads((Path(scratch_recipe.output.dir) / METRICS_FILE).read_text())
    logger.info("Training the from-scratch baseline (evaluation.compare_to_scratch)")
    return finetune(scratch_recipe, write_card=False).metrics


def _transfer_gain(metrics: dict[str, Any], scratch: dict[str, Any]) -> dict[str, float]:
    split = "test" if "test" in metrics and "test" in scratch else "validation"
    return {key: round(metrics[split][key] - scratch[split][key], 6) for key in ("accuracy", "f1_macro")}


def finetune(recipe: Recipe, write_card: bool = True) -> FinetuneResult:
    """Run a recipe end to end and write its model folder; resumes from the last checkpoint if any.

    Stages, cross-validation and learning curves train their sub-runs first (``hf_transfer.protocols``);
    ``model.name_or_path: auto`` ranks ``model.candidates`` first (``hf_transfer.transferability``).
    """
    if recipe.model.name_or_path == AUTO:
        from ..transferability.auto import finetune_auto

        return finetune_auto(recipe, write_card)
    if recipe.stages or recipe.evaluation.cross_validate or recipe.evaluation.learning_curve:
        from ..protocols import run_protocols

        return run_protocols(recipe, write_card)
    return run_single(recipe, write_card)


#: Called after training, before anything is written: ``(trainer, metrics) -> entries added to metrics``.
ExtraMetrics = Callable[[TransferTrainer, dict[str, Any]], dict[str, Any]]


def protected_paths(recipe: Recipe) -> dict[str, Path]:
    """Local inputs of the run (data folders, files) that ``output.dir`` must neither be nor contain."""
    found: dict[str, Path] = {}
    sections = [("data", recipe.data)]
    target = getattr(recipe.method.options, "target", None)
    if target is not None and hasattr(target, "path"):
        sections.append(("method.target", target))
    for i, stage in enumerate(recipe.stages):
        sections.append((f"stages.{i}.data", stage.recipe.data))
    for where, section in sections:
        path = Path(str(section.path)).expanduser() if section.path else None
        if path is not None and path.exists():
            found[f"{where}.path"] = path
    return found


def run_folder(recipe: Recipe) -> RunFolder:
    return RunFolder(recipe.output.dir, overwrite=recipe.output.overwrite, protected=protected_paths(recipe))


def run_single(recipe: Recipe, write_card: bool = True, extra_metrics: ExtraMetrics | None = None,
               data: PreparedData | None = None) -> FinetuneResult:
    """One training run; ``data`` replaces the recipe's own splits (cross-validation folds, curve fractions)."""
    folder = run_folder(recipe)
    seed = int(recipe.training.get("seed", 42))
    set_seed(seed)
    task = get_task(recipe.task)
    state = distributed_state()
    # Pre-flight, cheapest first: output folder, model config, then data (rows included); nothing is written yet.
    if state.is_main_process:
        folder.check(recipe.to_yaml())
        check_push_target(recipe.output.hub_model_id, recipe.output.push_to_hub)
    resolve_model_source(recipe.model.name_or_path, recipe.task)
    plan = preflight_training(recipe)
    if data is None:
        with state.main_process_first():
            data = prepare_data(recipe.data, task.input_roles, seed)
    plan.check_split_sizes(data.sizes())
    method_preflight(recipe, data.label_names)
    logger.info("Data: %s; %d labels", data.sizes(), len(data.label_names))
    with ExitStack() as claim:
        with state.main_process_first():  # rank 0 claims the folder; the others then find the same checkpoint
            if state.is_main_process:
                resume_from = claim.enter_context(folder.claimed(recipe.to_yaml()))
            else:
                resume_from = last_complete_checkpoint(folder.checkpoints)
        trainer, metrics = _train_and_evaluate(recipe, data, folder, resume_from)
        if recipe.evaluation.compare_to_scratch:
            scratch = _scratch_baseline(recipe, folder)
            metrics["scratch"] = {k: scratch[k] for k in ("validation", "test", "train") if k in scratch}
            metrics["transfer_gain"] = _transfer_gain(metrics, scratch)
        if extra_metrics is not None:
            metrics.update(extra_metrics(trainer, metrics))
        if trainer.is_world_process_zero():
            write_run_outputs(trainer, recipe, data, metrics, folder, write_card=write_card)
        trainer.accelerator.wait_for_everyone()
    return FinetuneResult(output_dir=folder.path, metrics=metrics, model=trainer.model, trainer=trainer)
