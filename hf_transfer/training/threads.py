"""torch's intra-op threads for a run: as many as the cores this process can have to itself.

torch starts one intra-op (OpenMP) thread per core it sees, as if the process were alone. It is not: data-loader
workers decode next to it, torchrun may start several processes on one machine, and a shared machine runs other
jobs. OpenMP threads that outnumber the free cores wait on each other at every parallel region, and a step then
takes many times longer than on one thread (measured in docs/performance.md). So a run chooses the count:

- ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) set by the user wins, as torch already applied it;
- a head trained on cached features runs one thread: its steps are a few small matrix products, which several
  threads only slow down;
- otherwise the cores this process may use (CPU affinity, the cgroup's CPU quota), less the cores busy with other
  work (threads runnable right now, when the affinity covers the whole machine so the load is about these cores),
  shared among this machine's training processes, less one core per data-loader worker (each worker runs one
  thread of its own); at least one.

The count is only ever lowered (a lower one set in the process, e.g. by a notebook, stays), and put back after the run.
A run of one process looks at the other work again every ``RECHECK_S`` seconds (:class:`ThreadRecheck`), so a
burst of other work at its start does not halve the whole run, and work that starts later gets its cores back.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
RECHECK_S = 60.0
"""Seconds of training between two looks at the machine's other work."""


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count of a run and why, for the log and ``metrics.json``."""

    threads: int
    reason: str
    cores: int
    workers: int
    processes: int
    ceiling: int = 0
    """The most threads the run may take when it looks again (the count before the run); 0: it never looks again
    (a user's variable, a cached head, several processes)."""

    def to_metrics(self) -> dict[str, object]:
        return asdict(self)


def usable_cores(quota_file: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = quota_file.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_cores(cores: int, processes: int, loadavg: Path = Path("/proc/loadavg"), samples: int = 5) -> int:
    """Cores taken by other work right now, when the machine's load is about the cores this process may use (its
    affinity covers the machine); else 0.

    Read from the kernel's count of runnable threads (``/proc/loadavg``'s fourth field), the least of a few samples
    less this machine's training processes, not from the load averages: those lag by minutes, so a run started right
    after another one would see the finished run's load and starve itself on an idle machine.
    """
    if cores != (os.cpu_count() or cores):
        return 0
    counts = []
    for sample in range(samples):
        try:
            counts.append(int(loadavg.read_text().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 0
        if sample + 1 < samples:
            time.sleep(0.02)
    return min(cores, max(0, min(counts) - processes))


def choose_threads(workers: int, processes: int, cached_head: bool, environ: Mapping[str, str] | None = None,
                   cores: int | None = None, busy: int | None = None) -> ThreadChoice:
    """The intra-op thread count for a run (module docstring); ``cores``/``busy`` are measured when not given."""
    environ = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else cores
    processes = max(1, processes)
    current = torch.get_num_threads()
    for name in USER_VARIABLES:
        if environ.get(name, "").strip():
            return ThreadChoice(current, f"{name}={environ[name].strip()} is set", cores, workers, processes)
    if cached_head:
        threads, reason = 1, "a head trained on cached features"
    else:
        busy = busy_cores(cores, processes) if busy is None else busy
        threads = threads_for(cores, busy, processes, workers)
        reason = (f"{cores} cores" + (f", {busy} busy with other work" if busy else "")
                  + f", {processes} training process{'es' if processes > 1 else ''}, "
                  f"{workers} data-loader worker{'s' if workers != 1 else ''}")
    if threads > current:  # never raised: a lower count was set in this process on purpose
        threads, reason = current, f"{current} already set in this process ({reason} would allow {threads})"
    ceiling = current if not cached_head and processes == 1 and cores == (os.cpu_count() or cores) else 0
    return ThreadChoice(threads, reason, cores, workers, processes, ceiling)


def threads_for(cores: int, busy: int, processes: int, workers: int) -> int:
    """The free cores shared among the training processes, less one per data-loader worker; at least one."""
    return max(1, max(1, (cores - busy) // processes) - workers)


def _state_and_parent(stat: Path) -> tuple[str, int] | None:
    """A task's state letter and parent pid from its ``stat`` file (the name in brackets may hold spaces)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def others_runnable(proc: Path = Path("/proc"), pid: int | None = None, samples: int = 5) -> int | None:
    """Threads runnable right now outside this process and its children (data-loader workers), the least of a few
    samples; None where ``/proc`` cannot tell. Unlike at the start, the run's own threads are busy now, so they
    are counted and taken away rather than assumed."""
    pid = os.getpid() if pid is None else pid
    tree = [pid] + [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit() and entry.name != str(pid)
                    and (_state_and_parent(entry / "stat") or ("", -1))[1] == pid]
    counts = []
    for sample in range(samples):
        try:
            total = int((proc / "loadavg").read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        ours = sum(1 for member in tree for stat in (proc / str(member) / "task").glob("*/stat")
                   if (_state_and_parent(stat) or ("",))[0] == "R")
        counts.append(max(0, total - ours))
        if sample + 1 < samples:
            time.sleep(0.02)
    return min(counts)


class ThreadRecheck(TrainerCallback):
    """Every ``RECHECK_S`` seconds of training, the thread count again from the other work on the machine now.

    Chosen once, the count followed whatever ran at the start: a run started while a test suite was finishing took
    one thread of two for its whole length (docs/performance.md). Never above the count before the run; changes
    are logged and listed in ``metrics.json`` (``train.torch_threads.changes``).
    """

    def __init__(self, choice: ThreadChoice, clock=time.monotonic, others=others_runnable) -> None:
        self.choice, self.clock, self.others = choice, clock, others
        self.changes: list[dict[str, int]] = []
        self._last: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        if self._last is None:
            self._last = now
        if now - self._last < RECHECK_S:
            return
        self._last = now
        busy = self.others()
        if busy is None:
            return
        choice = self.choice
        threads = min(choice.ceiling, threads_for(choice.cores, min(busy, choice.cores), 1, choice.workers))
        if threads != torch.get_num_threads():
            logger.info("torch threads: %d from step %d (%d cores, %d busy with other work now).", threads,
                        state.global_step, choice.cores, busy)
            torch.set_num_threads(threads)
            self.changes.append({"step": int(state.global_step), "threads": threads, "busy": busy})

    def report(self) -> dict[str, object]:
        return {"changes": self.changes} if self.changes else {}


def local_processes(world_size: int) -> int:
    """Training processes on this machine: torchrun/accelerate's ``LOCAL_WORLD_SIZE``, else all of them."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or world_size))
    except ValueError:
        return max(1, world_size)


@contextmanager
def torch_threads(choice: ThreadChoice) -> Iterator[ThreadChoice]:
    """Run the block on ``choice.threads`` intra-op threads (logged once), then restore the previous count."""
    before = torch.get_num_threads()
    logger.info("torch threads: %d (%s).", choice.threads, choice.reason)
    torch.set_num_threads(choice.threads)
    try:
        yield choice
    finally:
        torch.set_num_threads(before)
