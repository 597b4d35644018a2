"""Write a finished run: model folder, processor, Trainer state and results, plots, model card, then metrics (last).

The folder follows the transformers example scripts (``run_classification.py``, ``run_image_classification.py``):
besides the model it holds ``trainer_state.json`` (``Trainer.save_state``: log history, best metric and
checkpoint, global step) and ``train_results.json``, ``eval_results.json``, ``test_results.json`` (with a test
split) and ``all_results.json`` (``Trainer.save_metrics``: flat ``train_*``/``eval_*``/``test_*`` numbers, all of
them combined in ``all_results.json``). They are written into the staging folder and moved in with the model, so
they are listed in the ownership marker and a killed run never leaves half of them. The checkpoints stay in
``<dir>/checkpoints/checkpoint-N`` (removed at the end unless ``output.keep_checkpoints``):
``transformers.trainer_utils.get_last_checkpoint(f"{dir}/checkpoints")`` finds them, not
``get_last_checkpoint(dir)``; ``best_model_checkpoint`` in ``trainer_state.json`` names one of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

from ..card import CardInputs, write_model_card
from ..data.prepare import PreparedData
from ..evaluation.plots import save_confusion_matrix, save_learning_curves
from ..hub import hub_offline, push_folder
from ..atomic import write_atomic
from ..evaluation.metrics import HEADLINE
from ..recipe import Recipe
from ..tasks.base import get_task
from .outputs import RunFolder

logger = logging.getLogger(__name__)

#: TrainingArguments values worth showing in the card.
CARD_HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                        "gradient_accumulation_steps", "weight_decay", "lr_scheduler_type", "warmup_steps",
                        "optim", "seed", "bf16", "fp16", "max_grad_norm", "label_smoothing_factor")


def card_inputs(recipe: Recipe, data: PreparedData, metrics: dict, args, model_name: str) -> CardInputs:
    task = get_task(recipe.task)
    bases = task.base_models(recipe)
    world = max(1, args.world_size)
    hyperparameters = {key: getattr(args, key) for key in CARD_HYPERPARAMETERS}
    hyperparameters["effective_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    summary = {**data.sizes(), "columns": data.columns, "splits": data.sources}
    return CardInputs(
        model_name=model_name, task=recipe.task,
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        datasets=[recipe.data.path], label_names=data.label_names, strategy=recipe.strategy.name,
        strategy_options=recipe.strategy.to_mapping(), hyperparameters=hyperparameters,
        data_summary=summary, metrics=metrics, license=recipe.output.license, tags=list(recipe.output.tags),
        recipe_yaml=recipe.to_yaml(), repo_id=recipe.output.hub_model_id, facts=task.card_facts(recipe))


#: The Trainer's final training log entry (``train_runtime``, ``train_loss``, ...) that ``train_results.json`` holds.
_TRAIN_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss",
               "epoch")
#: Our split name -> the prefix of the example scripts' metric keys (and of their ``<prefix>_results.json``).
RESULT_SPLITS = {"validation": "eval", "test": "test"}


def split_results(report: dict[str, Any], prefix: str, epoch: float | None) -> dict[str, Any]:
    """``Trainer.evaluate``-style flat numbers of one split's report: ``eval_accuracy``, ``eval_loss``, ..."""
    results: dict[str, Any] = {f"{prefix}_{key}": report[key] for key in (*HEADLINE, "loss") if key in report}
    if "num_samples" in report:
        results[f"{prefix}_samples"] = report["num_samples"]
    if epoch is not None:
        results["epoch"] = epoch
    return results


def trainer_results(log_history: list[dict[str, Any]], metrics: dict[str, Any],
                    sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
    """What the example scripts' ``trainer.save_metrics(split, ...)`` calls would write, split -> numbers.

    ``train``: the Trainer's final training log entry (the metrics of ``trainer.train()``) and ``train_samples``;
    ``eval``/``test``: the run's own validation/test report (after the best model was reloaded), prefixed.
    """
    final = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    train = {key: final[key] for key in _TRAIN_KEYS if key in final}
    if "train" in sizes:
        train["train_samples"] = sizes["train"]
    results = {"train": train}
    epoch = final.get("epoch")
    for split, prefix in RESULT_SPLITS.items():
        if isinstance(metrics.get(split), dict):
            results[prefix] = split_results(metrics[split], prefix, epoch)
    return results


def _relative_checkpoint(path: str) -> str:
    """``checkpoints/checkpoint-N`` for the Trainer's absolute path of the best checkpoint."""
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else path


def write_trainer_files(trainer, metrics: dict[str, Any], sizes: dict[str, int], directory: Path) -> list[str]:
    """``trainer_state.json`` and the ``*_results.json`` files into ``directory`` (the staging folder); their names.

    The same content as ``Trainer.save_state`` and ``Trainer.save_metrics(split, ..., combined=True)`` (indent 4,
    sorted keys), but written where this run writes, each file atomically.
    """
    directory = Path(directory)
    state = trainer.state
    fields = dataclasses.asdict(state)
    if fields.get("best_model_checkpoint"):  # relative to the run folder: no local path is pushed with it
        fields["best_model_checkpoint"] = _relative_checkpoint(fields["best_model_checkpoint"])
    state_json = json.dumps(fields, indent=2, sort_keys=True) + "\n"  # TrainerState.save_to_json
    write_atomic(directory / "trainer_state.json", state_json)
    names = ["trainer_state.json"]
    combined: dict[str, Any] = {}
    for split, numbers in trainer_results(state.log_history, metrics, sizes).items():
        write_atomic(directory / f"{split}_results.json", json.dumps(numbers, indent=4, sort_keys=True) + "\n")
        names.append(f"{split}_results.json")
        combined.update(numbers)
    write_atomic(directory / "all_results.json", json.dumps(combined, indent=4, sort_keys=True) + "\n")
    return [*names, "all_results.json"]


def write_run_outputs(trainer, recipe: Recipe, data: PreparedData, metrics: dict, folder: RunFolder,
                      write_card: bool = True, model=None,
                      extra_outputs: Callable[[Path], None] | None = None) -> None:
    """``model`` is what gets saved when it is not ``trainer.model`` (the full model around a head trained on
    cached features)."""
    staging = folder.staging()
    model = trainer.model if model is None else model
    if model is trainer.model:
        trainer.save_model(str(staging))
    else:  # what Trainer.save_model does for a PreTrainedModel in one process (the processor: save_processor below)
        model.save_pretrained(staging)
    get_task(recipe.task).save_processor(trainer.processing_class, model, staging)
    if extra_outputs is not None:  # e.g. lora's adapter/, committed with the model
        extra_outputs(staging)
    report = metrics.get("test") or metrics["validation"]
    save_confusion_matrix(report["confusion_matrix"], data.label_names, staging / "confusion_matrix.png")
    has_curves = save_learning_curves(trainer.state.log_history, staging / "learning_curves.png") is not None
    (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved recipe.yaml replaces it
    write_trainer_files(trainer, metrics, data.sizes(), staging)
    if write_card:
        inputs = card_inputs(recipe, data, metrics, trainer.args, recipe.output.hub_model_id or folder.path.name)
        inputs.data_summary["has_learning_curves_png"] = has_curves
        write_model_card(inputs, staging)
    folder.commit_staging()
    folder.finish(metrics, keep_checkpoints=recipe.output.keep_checkpoints)
    logger.info("Wrote %s", folder.path)
    if recipe.output.push_to_hub:
        if hub_offline():  # said before training too; the finished run stays a success
            logger.warning("HF_HUB_OFFLINE is set: %s was not pushed; on a machine that reaches the Hub run "
                           "`hf-transfer push %s %s`.", folder.path, folder.path, recipe.output.hub_model_id)
        else:
            push_folder(folder.path, recipe.output.hub_model_id, private=recipe.output.hub_private)
