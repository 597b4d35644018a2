"""What the recipe's speed switches buy: the recipe path with each switch on, against its defaults.

``hf-transfer bench --switches`` runs a scenario's recipe path once per switch, interleaved within each
repeat (forward, then backward order) like the main benchmark, and reports training and evaluation
throughput, whole-run time (which includes ``torch.compile``'s compilation) and the ratio to the defaults.
A switch that fails on this machine (no bf16 kernels, no compiler) is reported with its error, not hidden.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..atomic import write_atomic
from ..registry import BENCH_SWITCHES
from ..tasks.base import get_task
from .report import environment
from .runners import build_workload, hf_transfer_once
from .scenarios import SCENARIOS, BenchSettings

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Switch:
    """Recipe overrides measured against the defaults."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    applies: Callable[[Any], bool] = lambda task: True
    """Whether the switch means anything for a task adapter (``channels_last`` only for convolutional inputs)."""
    cpu_overrides: dict[str, Any] = field(default_factory=dict)
    """Added without a GPU (``TrainingArguments`` takes bf16 on a CPU only with ``use_cpu``)."""

    def resolved(self) -> dict[str, Any]:
        import torch

        return {**self.overrides, **({} if torch.cuda.is_available() else self.cpu_overrides)}


for _switch in (
    Switch("defaults"),
    Switch("channels_last_off", {"model.channels_last": False}, applies=lambda task: task.uses_channels_last),
    Switch("torch_compile", {"training.torch_compile": True}),
    Switch("bf16", {"training.bf16": True}, cpu_overrides={"training.use_cpu": True}),
):
    BENCH_SWITCHES.add(_switch.name, _switch)
SWITCHES = BENCH_SWITCHES  # the old name

DEFAULT_SCENARIOS = ("image_full_ft", "text_full_ft")


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def measure_switches(scenario_name: str, settings: BenchSettings, only: list[str] | None = None) -> dict[str, Any]:
    """``only``: the switches to measure (all by default); ``defaults`` is always measured, as their baseline."""
    scenario = SCENARIOS[scenario_name]
    workload = build_workload(scenario, settings)
    switches = [s for s in BENCH_SWITCHES.values()
                if s.applies(get_task(scenario.task)) and (not only or s.name == "defaults" or s.name in only)]
    samples: dict[str, dict[str, list[float]]] = {s.name: {"train": [], "eval": [], "end_to_end_s": []}
                                                   for s in switches}
    errors: dict[str, str] = {}
    hf_transfer_once(workload)  # untimed: the first run of a process pays one-off start-up costs
    for repeat in range(settings.repeats):
        for switch in (switches if repeat % 2 == 0 else list(reversed(switches))):
            if switch.name in errors:
                continue
            try:
                result = hf_transfer_once(workload, switch.resolved())
            except Exception as error:  # reported in the JSON: a switch this machine cannot run
                errors[switch.name] = f"{type(error).__name__}: {error}"[:500]
                logger.warning("%s with %s failed: %s", scenario_name, switch.name, errors[switch.name])
                continue
            for kind in samples[switch.name]:
                samples[switch.name][kind].append(result[kind])
            logger.info("%s repeat %d %s: %s", scenario_name, repeat + 1, switch.name, result)
    kind = "train" if scenario.train else "eval"
    baseline = _median(samples["defaults"][kind])
    rows = {}
    for switch in switches:
        rate = _median(samples[switch.name][kind])
        rows[switch.name] = {
            "overrides": switch.resolved(), "samples_per_s": rate,
            "eval_samples_per_s": _median(samples[switch.name]["eval"]),
            "end_to_end_s": _median(samples[switch.name]["end_to_end_s"]),
            "vs_defaults": round(rate / baseline, 3) if rate and baseline else None,
            **({"error": errors[switch.name]} if switch.name in errors else {}),
        }
    return {"name": scenario_name, "measures": kind, "steps": workload.train_steps, "repeats": settings.repeats,
            "batch_size": settings.batch_size, "switches": rows}


def run_switch_benchmarks(names: list[str], settings: BenchSettings, output,
                          only: list[str] | None = None) -> dict[str, Any]:
    """Measure every switch on ``names`` and write the JSON report to ``output`` (atomically, as it goes)."""


    report = {"env": environment(), "settings": {k: str(v) for k, v in vars(settings).items()}, "scenarios": []}
    started = time.perf_counter()
    for name in names:
        report["scenarios"].append(measure_switches(name, settings, only))
        report["wall_s"] = round(time.perf_counter() - started, 1)
        write_atomic(output, json.dumps(report, indent=2) + "\n")
    return report


def switches_table(report: dict[str, Any]) -> str:
    lines = ["| scenario | switch | samples/s | vs defaults | whole run s | note |", "|---|---|---|---|---|---|"]
    for row in report["scenarios"]:
        for name, result in row["switches"].items():
            lines.append(f"| {row['name']} | {name} | {result['samples_per_s']} | {result['vs_defaults']} | "
                         f"{result['end_to_end_s']} | {result.get('error', '')} |")
    return "\n".join(lines)
