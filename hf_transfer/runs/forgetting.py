"""Forgetting report: how well the transferred backbone still serves the source task.

After a target stage, the source stage's own head (kept aside in its folder) is put back on top of the
target-trained backbone and evaluated on the source split the source stage reported; the drop from the
source stage's accuracy is the catastrophic forgetting of the source task (McCloskey & Cohen 1989;
measured this way by Li & Hoiem, "Learning without Forgetting", 2016).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ..data.prepare import prepare_data
from ..recipe import Recipe
from ..tasks.base import get_task
from ..evaluation.predict import evaluate_split, predictor
from .carry import carried_keys


def source_forgetting(source_recipe: Recipe, source_dir: Path, source_metrics: dict[str, Any],
                      target_model: nn.Module, source_name: str = "source") -> dict[str, Any]:
    """Source-task accuracy before (the source stage's) and after (target backbone + source head)."""
    task = get_task(source_recipe.task)
    data = prepare_data(source_recipe.data, task.input_roles, source_recipe.seed)
    split = "test" if data.test is not None and "test" in source_metrics else "validation"
    model, processor = task.load_model(
        source_recipe.replace({"model.name_or_path": str(source_dir), "model.pretrained": True}), data.label_names)
    target_state = target_model.state_dict()
    model.load_state_dict({key: target_state[key].detach().cpu() for key in carried_keys(model, "all")}, strict=False)
    inputs = task.model_inputs(source_recipe, data, model, processor)
    dataset = inputs.test if split == "test" else inputs.validation
    batch = int(source_recipe.training.get("per_device_eval_batch_size", 64))
    with tempfile.TemporaryDirectory() as scratch:
        after = evaluate_split(predictor(model, processor, inputs.collator, batch, scratch), dataset,
                               data.label_names, split, groups=inputs.groups.get(split))
    before = source_metrics[split]
    return {"source_stage": source_name, "split": split, "num_samples": after["num_samples"],
            "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
            "accuracy_change": round(after["accuracy"] - before["accuracy"], 6),
            "f1_macro_before": before["f1_macro"], "f1_macro_after": after["f1_macro"]}
