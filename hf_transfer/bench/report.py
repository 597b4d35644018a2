"""Measuring scenarios (interleaved repeats, medians) and writing the JSON report and its table."""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import timm
import torch
import transformers

from ..atomic import write_atomic
from .clock import GpuUtilisation, peak_gpu_mb, peak_rss_mb, reset_peaks
from .runners import RUNNER_FUNCTIONS, build_workload
from .scenarios import RUNNERS, SCENARIOS, BenchSettings, Scenario

logger = logging.getLogger(__name__)

def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return round(statistics.median(values), 2) if values else float("nan")


def _paired_ratios(samples: dict[str, dict[str, list[float]]], kind: str, baseline: str) -> list[float]:
    return [round(ours / theirs, 3) for ours, theirs in zip(samples["hf_transfer"][kind], samples[baseline][kind])]


def measure(scenario: Scenario, settings: BenchSettings) -> dict[str, Any]:
    workload = build_workload(scenario, settings)
    samples: dict[str, dict[str, list[float]]] = {
        r: {"train": [], "eval": [], "eval_first_pass": [], "rss": [], "gpu_mb": [], "gpu_util": [],
            "end_to_end_s": [], "cached_end_to_end_s": []} for r in RUNNERS}
    started = time.perf_counter()
    for repeat in range(settings.repeats):
        for runner in (RUNNERS if repeat % 2 == 0 else tuple(reversed(RUNNERS))):
            reset_peaks()
            with GpuUtilisation() as utilisation:
                result = RUNNER_FUNCTIONS[runner](workload)
            samples[runner]["rss"].append(peak_rss_mb() or float("nan"))
            if torch.cuda.is_available():
                samples[runner]["gpu_mb"].append(peak_gpu_mb())
                if utilisation.mean is not None:
                    samples[runner]["gpu_util"].append(utilisation.mean)
            for kind in ("train", "eval", "eval_first_pass", "end_to_end_s", "cached_end_to_end_s"):
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
        # within one repeat the runners ran back to back: their ratio is the least drift-prone estimate
        "ratio_vs_raw_per_repeat": _paired_ratios(samples, kind, "raw"),
        "ratio_vs_naive_per_repeat": _paired_ratios(samples, kind, "naive_trainer"),
        "samples_per_s_per_repeat": {r: [round(v, 2) for v in samples[r][kind]] for r in RUNNERS},
        "peak_rss_mb": {r: _median(samples[r]["rss"]) for r in RUNNERS},
        "end_to_end_s": {r: _median(samples[r]["end_to_end_s"]) for r in RUNNERS},
        "repeats": settings.repeats, "steps": workload.train_steps if scenario.train else 0,
        "train_examples": len(workload.data.train) if scenario.train else 0,
        "batch_size": settings.batch_size, "bf16": workload.bf16, "wall_s": round(time.perf_counter() - started, 1),
    }
    if samples["hf_transfer"]["eval_first_pass"]:  # the first evaluation decodes; later ones reuse its images
        first = _median(samples["hf_transfer"]["eval_first_pass"])
        row["hf_transfer_first_eval_pass"] = {"eval_samples_per_s": first,
                                              "ratio_vs_raw": round(first / row["eval_samples_per_s"]["raw"], 3)}
    if torch.cuda.is_available():
        row["peak_gpu_mb"] = {r: _median(samples[r]["gpu_mb"]) for r in RUNNERS}
        row["gpu_utilisation_pct"] = {r: _median(samples[r]["gpu_util"]) for r in RUNNERS}
    if samples["hf_transfer"]["cached_end_to_end_s"]:
        first, second = row["end_to_end_s"]["hf_transfer"], _median(samples["hf_transfer"]["cached_end_to_end_s"])
        row["feature_cache"] = {"first_run_s": first, "cached_run_s": second, "speedup": round(first / second, 1),
                                "first_vs_naive_trainer": round(row["end_to_end_s"]["naive_trainer"] / first, 2)}
    return row


def environment() -> dict[str, Any]:

    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def run_benchmarks(names: list[str], settings: BenchSettings, output: Path) -> dict[str, Any]:
    """Measure ``names`` and write the JSON report to ``output`` (atomically)."""

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
