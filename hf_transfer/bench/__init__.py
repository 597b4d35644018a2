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

from .clock import StepClock
from .report import environment, markdown_table, measure, run_benchmarks
from .runners import RUNNER_FUNCTIONS, Workload, build_workload, hf_transfer_once
from .scenarios import RUNNERS, SCENARIOS, BenchSettings, Scenario

__all__ = ["RUNNERS", "RUNNER_FUNCTIONS", "SCENARIOS", "BenchSettings", "Scenario", "StepClock", "Workload",
           "build_workload", "environment", "hf_transfer_once", "markdown_table", "measure", "run_benchmarks"]
