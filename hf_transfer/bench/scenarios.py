"""Benchmark scenarios (task, model, data, strategy) and the settings every scenario runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    bf16: bool | None = None
    """Precision of every runner; ``None``: bf16 where hf-transfer turns it on by default (bf16 GPUs)."""

    @classmethod
    def quick(cls, shared: Path) -> "BenchSettings":
        return cls(steps=6, warmup_steps=2, eval_samples=128, repeats=1, shared=shared)



# --------------------------------------------------------------------------------------------- scenarios
