"""Write a finished run: model folder, processor, plots, model card, then metrics (last)."""

from __future__ import annotations

import logging

from ..card import CardInputs, write_model_card
from ..data.prepare import PreparedData
from ..evaluation.plots import save_confusion_matrix, save_learning_curves
from ..hub import push_folder
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


def write_run_outputs(trainer, recipe: Recipe, data: PreparedData, metrics: dict, folder: RunFolder,
                      write_card: bool = True, model=None) -> None:
    """``model`` is what gets saved when it is not ``trainer.model`` (the full model around a head trained on
    cached features)."""
    staging = folder.staging()
    model = trainer.model if model is None else model
    if model is trainer.model:
        trainer.save_model(str(staging))
    else:  # what Trainer.save_model does for a PreTrainedModel in one process (the processor: save_processor below)
        model.save_pretrained(staging)
    get_task(recipe.task).save_processor(trainer.processing_class, model, staging)
    report = metrics.get("test") or metrics["validation"]
    save_confusion_matrix(report["confusion_matrix"], data.label_names, staging / "confusion_matrix.png")
    has_curves = save_learning_curves(trainer.state.log_history, staging / "learning_curves.png") is not None
    (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved recipe.yaml replaces it
    if write_card:
        inputs = card_inputs(recipe, data, metrics, trainer.args, recipe.output.hub_model_id or folder.path.name)
        inputs.data_summary["has_learning_curves_png"] = has_curves
        write_model_card(inputs, staging)
    folder.commit_staging()
    folder.finish(metrics, keep_checkpoints=recipe.output.keep_checkpoints)
    logger.info("Wrote %s", folder.path)
    if recipe.output.push_to_hub:
        push_folder(folder.path, recipe.output.hub_model_id, private=recipe.output.hub_private)
