"""Timing and memory readings shared by every runner (CPU RSS; GPU memory and utilisation when there is one)."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import torch


def reset_peaks() -> None:
    """Start a new peak for RSS (``/proc/self/clear_refs``, Linux) and for GPU memory."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_gpu_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _synchronize() -> None:
    """GPU work is queued asynchronously: a clock must wait for it before it reads the time."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock:
    """Wall time from the end of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.start, self.end = warmup, 0, None, None

    def tick(self) -> None:
        _synchronize()
        self.steps += 1
        if self.steps == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()

    def samples_per_s(self, batch_size: int) -> float:
        timed = self.steps - self.warmup
        return batch_size * timed / (self.end - self.start) if timed > 0 and self.start else float("nan")


def clock_callback(clock: StepClock):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    return Clock()


class GpuUtilisation:
    """Mean GPU utilisation (%) sampled every ``interval`` seconds while the block runs (NVML via torch).

    ``mean`` stays ``None`` without a GPU or without NVML bindings (``pip install nvidia-ml-py``).
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.samples, self.mean = interval, [], None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(torch.cuda.utilization())
            except Exception:  # no NVML: nothing to record
                return

    def __enter__(self) -> "GpuUtilisation":
        if torch.cuda.is_available():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.mean = round(sum(self.samples) / len(self.samples), 1) if self.samples else None
