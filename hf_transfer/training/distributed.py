"""How a run is spread over processes, machines and devices, and the launches that would not do what they ask.

accelerate 1.x starts several processes through ``torch.distributed.run`` (``--multi_gpu``, ``--use_fsdp`` or a
``MULTI_GPU``/``FSDP`` config file) or through ``mpirun`` (``--mpirun_hostfile``). ``--cpu --num_processes N``, a
plain ``--num_processes N`` on a machine without GPUs, and a ``MULTI_CPU`` config without a hostfile all go to its
"simple launcher", which starts ONE process: it would train alone on all the data and exit 0. On a machine
without GPUs, ``--multi_gpu`` does start N processes, and they train on the CPU over gloo
(``arguments.multi_process_cpu``). ``check_launch`` refuses the one-process case before anything is read, and the
sharded modes (FSDP, DeepSpeed ZeRO-3), whose weights only all processes together can gather, while hf-transfer
evaluates, exports and saves the trained model from the main process alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import TrainingError

#: What ``metrics.json`` records under ``distributed`` (``ProcessLayout.to_metrics``).
METRICS_KEY = "distributed"


@dataclass(frozen=True)
class ProcessLayout:
    """Where and how this run trains, read from the ``Accelerator`` the Trainer built (so a launcher's
    ``--mixed_precision`` shows even when the recipe sets no ``bf16``/``fp16``)."""

    num_processes: int
    process_index: int
    num_machines: int
    distributed_type: str
    """accelerate's ``DistributedType``: ``NO``, ``MULTI_CPU`` (gloo), ``MULTI_GPU`` (nccl), ``DEEPSPEED``, ..."""
    device: str
    mixed_precision: str

    @classmethod
    def of(cls, accelerator) -> ProcessLayout:
        processes = int(accelerator.num_processes)
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", processes) or processes)  # torchrun, mpirun, deepspeed
        return cls(num_processes=processes, process_index=int(accelerator.process_index),
                   num_machines=max(1, processes // max(1, per_machine)),
                   distributed_type=str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)),
                   device=_device_name(accelerator.device), mixed_precision=str(accelerator.mixed_precision))

    def describe(self) -> str:
        """The line every process logs when training starts."""
        return (f"Training on {self.num_processes} process(es) on {self.num_machines} machine(s), this is process "
                f"{self.process_index}: device {self.device}, mixed precision {self.mixed_precision}, "
                f"distributed type {self.distributed_type}")

    def to_metrics(self) -> dict[str, Any]:
        """The run as a whole (the process index and the device's number are this process's own)."""
        values = asdict(self)
        values.pop("process_index")
        values["device"] = self.device.split(":")[0]
        return values


def _device_name(device) -> str:
    """``cuda:1``, ``mps``; ``cpu`` without the index accelerate gives each CPU process (they share one CPU)."""
    return "cpu" if getattr(device, "type", str(device)) == "cpu" else str(device)


def _flag(name: str) -> bool:
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env(name, False)


def _one_process_of_several(state, training: Mapping[str, Any]) -> str | None:
    """accelerate's simple launcher sets ``ACCELERATE_USE_CPU`` (no other launcher does) and ``MASTER_ADDR`` only
    when asked for more than one process or machine; the process it starts then finds a group of one."""
    if "ACCELERATE_USE_CPU" not in os.environ or "MASTER_ADDR" not in os.environ or state.num_processes > 1:
        return None
    return ("accelerate launch was asked for several processes but started one (accelerate 1.x starts several on "
            "the CPU only through torchrun or mpirun, not with --cpu or a MULTI_CPU config): run "
            "'accelerate launch --multi_gpu --num_processes N ...' without --cpu (gloo on the CPU), "
            "'--config_file examples/accelerate/multi_cpu.yaml', or 'torchrun --nproc_per_node N ...'; "
            "to train one process, unset MASTER_ADDR or run 'python scripts/finetune.py ...'.")


def _zero_stage(training: Mapping[str, Any]) -> int | None:
    """DeepSpeed's ZeRO stage from accelerate's launcher or the recipe's ``training.deepspeed`` (dict or JSON)."""
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").isdigit():
        return int(os.environ["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
    config = training.get("deepspeed") or (os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
                                           if _flag("ACCELERATE_USE_DEEPSPEED") else None)
    if isinstance(config, (str, Path)) and Path(config).is_file():
        try:
            config = json.loads(Path(config).read_text(encoding="utf-8"))
        except ValueError:
            return None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, Mapping) else None
    return stage if isinstance(stage, int) else None


def _sharded(state, training: Mapping[str, Any]) -> str | None:
    """FSDP and ZeRO-3 need every process to gather the weights; hf-transfer saves from the main one alone."""
    if _flag("ACCELERATE_USE_FSDP"):
        mode = "accelerate launch with FSDP (--use_fsdp or an FSDP config)"
    elif training.get("fsdp"):
        mode = "'training.fsdp'"
    elif _zero_stage(training) == 3:
        mode = "DeepSpeed ZeRO-3"
    else:
        return None
    return (f"{mode} is not supported: it shards the weights over the processes, while hf-transfer evaluates, "
            "exports and saves the trained model from the main process alone (and on a machine without GPUs "
            "accelerate 1.x silently trains plain data-parallel instead). Train data-parallel "
            "(examples/accelerate/multi_gpu.yaml) or with DeepSpeed ZeRO-1/2 (examples/accelerate/deepspeed.yaml).")


#: Launches refused before anything is read: each returns the one-line reason, or None.
LAUNCH_CHECKS: tuple[Callable[[Any, Mapping[str, Any]], str | None], ...] = (_one_process_of_several, _sharded)


def check_launch(state, training: Mapping[str, Any]) -> None:
    """``TrainingError`` when this launch would not train the way it was asked to (module docstring).

    ``state`` is accelerate's ``PartialState``; ``training`` the recipe's ``training`` section.
    """
    for check in LAUNCH_CHECKS:
        reason = check(state, training)
        if reason:
            raise TrainingError(reason)
