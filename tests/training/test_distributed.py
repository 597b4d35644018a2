"""Multi-process runs: the example accelerate configs load and pick the launcher they say, a 2-process CPU run
through ``examples/accelerate/multi_cpu.yaml`` (and through ``multi_node.yaml`` as two machines on one) trains on 2
processes and says so in ``metrics.json``, and the launches that would train otherwise are refused in one line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate import PartialState
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType
from accelerate.utils.other import get_free_port

from hf_transfer import finetune
from hf_transfer.errors import TrainingError
from hf_transfer.training.distributed import METRICS_KEY, check_launch

from test_end_to_end import text_recipe

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "accelerate"
ACCELERATE = Path(sys.executable).with_name("accelerate")

#: example config -> what accelerate's launcher makes of it: (config fields, launch arguments after validation).
EXPECTED = {
    "multi_cpu.yaml": ({"distributed_type": DistributedType.MULTI_GPU, "num_processes": 2, "num_machines": 1},
                       {"multi_gpu": True, "cpu": False, "num_processes": 2}),
    "multi_gpu.yaml": ({"distributed_type": DistributedType.MULTI_GPU, "num_machines": 1},
                       {"multi_gpu": True, "gpu_ids": "all"}),
    "multi_node.yaml": ({"distributed_type": DistributedType.MULTI_GPU, "num_machines": 2, "machine_rank": 0},
                        {"multi_gpu": True, "num_machines": 2, "num_processes": 8, "main_process_ip": "10.0.0.1",
                         "main_process_port": 29500}),
    "deepspeed.yaml": ({"distributed_type": DistributedType.DEEPSPEED},
                       {"use_deepspeed": True, "zero_stage": 2, "offload_optimizer_device": "none"}),
}

#: What a launcher may have exported into the test process's environment; cleared for the checks below.
LAUNCH_ENV = ("ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED",
              "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_MIXED_PRECISION")


def test_every_example_config_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_config_loads_and_picks_its_launcher(name):
    """accelerate's own loader (unknown keys raise) and its launch validation, as ``accelerate launch`` runs them."""
    path = EXAMPLES / name
    fields, launch = EXPECTED[name]
    config = load_config_from_file(str(path))
    for key, value in fields.items():
        assert getattr(config, key) == value, (name, key)
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(path), "train.py"])
    for section in ("deepspeed_config", "fsdp_config"):  # a sub-key that is no launch argument is silently dropped
        for key in getattr(config, section) or {}:
            assert hasattr(args, key), (name, section, key)
    args, _, _ = _validate_launch_command(args)
    for key, value in launch.items():
        assert getattr(args, key) == value, (name, key, getattr(args, key))


@pytest.fixture
def clean_launch_env(monkeypatch):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_process_started_for_several_is_refused(clean_launch_env):
    """What accelerate's simple launcher exports for ``--cpu --num_processes 2`` or a MULTI_CPU config."""
    state = PartialState()
    clean_launch_env.setenv("ACCELERATE_USE_CPU", "True")
    check_launch(state, {})  # --cpu with one process: no MASTER_ADDR, nothing to refuse
    clean_launch_env.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(TrainingError, match="asked for several processes but started one.*--multi_gpu"):
        check_launch(state, {})
    clean_launch_env.delenv("ACCELERATE_USE_CPU")  # MASTER_ADDR alone (torchrun, a cluster's environment) is fine
    check_launch(state, {})


def test_sharded_training_is_refused(clean_launch_env, tmp_path):
    state = PartialState()
    check_launch(state, {"deepspeed": {"zero_optimization": {"stage": 2}}})
    with pytest.raises(TrainingError, match="'training.fsdp' is not supported"):
        check_launch(state, {"fsdp": "full_shard"})
    with pytest.raises(TrainingError, match="ZeRO-3"):
        check_launch(state, {"deepspeed": {"zero_optimization": {"stage": 3}}})
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(TrainingError, match="ZeRO-3"):
        check_launch(state, {"deepspeed": str(config)})
    clean_launch_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    clean_launch_env.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    with pytest.raises(TrainingError, match="ZeRO-3"):
        check_launch(state, {})
    clean_launch_env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")  # the launcher's stage wins over the file
    check_launch(state, {})
    clean_launch_env.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(TrainingError, match="FSDP.*not supported.*multi_gpu.yaml"):
        check_launch(state, {})


def test_one_process_run_records_layout_and_launcher_precision(tiny_bert_dir, text_csv_data, tmp_path,
                                                               clean_launch_env, caplog):
    """``accelerate launch --mixed_precision bf16`` reaches the Trainer through the environment only: the log
    line and metrics.json report what the Accelerator does, not what the recipe says."""
    clean_launch_env.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    recipe = text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "run", training={"num_train_epochs": 1})
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        result = finetune(recipe)
    expected = {"num_processes": 1, "num_machines": 1, "distributed_type": "NO", "device": "cpu",
                "mixed_precision": "bf16"}
    assert result.metrics[METRICS_KEY] == expected
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[METRICS_KEY] == expected
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training on")]
    assert lines == ["Training on 1 process(es) on 1 machine(s), this is process 0: device cpu, mixed precision "
                     "bf16, distributed type NO"]


def _recipe_file(tiny_bert_dir: Path, text_csv_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(text_recipe(tiny_bert_dir, text_csv_data, out, training={"per_device_train_batch_size": 4}).to_yaml())
    return path, out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _launch(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(ACCELERATE), "launch", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _two_process_metrics(out: Path, logs: str) -> dict:
    """36 training rows, 4 per process and step, 2 processes: 5 steps an epoch, 10 in all (one process: 18)."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 10, logs[-3000:]
    started = sorted(line.partition("Training on ")[2] for line in logs.splitlines() if "Training on " in line)
    assert [line.partition(":")[0] for line in started] == [
        f"2 process(es) on {metrics[METRICS_KEY]['num_machines']} machine(s), this is process {index}"
        for index in (0, 1)], logs[-3000:]
    return metrics[METRICS_KEY]


def test_issue_command_cpu_two_processes_is_refused_in_one_line(tiny_bert_dir, text_csv_data, tmp_path):
    recipe, out = _recipe_file(tiny_bert_dir, text_csv_data, tmp_path)
    process = _launch("--num_processes", "2", "--cpu", str(REPO / "scripts" / "finetune.py"), str(recipe),
                      cwd=tmp_path)
    logs, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "started one" in errors[0], logs[-3000:]
    assert "***** Running training *****" not in logs and not out.exists()


def test_two_cpu_processes_through_the_multi_cpu_config(tiny_bert_dir, text_csv_data, tmp_path):
    recipe, out = _recipe_file(tiny_bert_dir, text_csv_data, tmp_path)
    process = _launch("--config_file", str(EXAMPLES / "multi_cpu.yaml"), str(REPO / "scripts" / "finetune.py"),
                      str(recipe), cwd=tmp_path)
    logs, _ = process.communicate(timeout=300)
    assert process.returncode == 0, logs[-3000:]
    assert _two_process_metrics(out, logs) == {"num_processes": 2, "num_machines": 1,
                                               "distributed_type": "MULTI_CPU", "device": "cpu",
                                               "mixed_precision": "no"}


def test_multi_node_config_as_two_machines_on_one(tiny_bert_dir, text_csv_data, tmp_path):
    """The shipped multi_node.yaml with only the address, port and process count changed on the command line."""
    recipe, out = _recipe_file(tiny_bert_dir, text_csv_data, tmp_path)
    port = str(get_free_port())
    machines = [_launch("--config_file", str(EXAMPLES / "multi_node.yaml"), "--machine_rank", str(rank),
                        "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                        str(REPO / "scripts" / "finetune.py"), str(recipe), cwd=tmp_path) for rank in (0, 1)]
    logs = [machine.communicate(timeout=300)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert _two_process_metrics(out, "".join(logs)) == {"num_processes": 2, "num_machines": 2,
                                                        "distributed_type": "MULTI_CPU", "device": "cpu",
                                                        "mixed_precision": "no"}


def test_mpi_ranks_count_as_several_cpu_processes(clean_launch_env):
    """mpirun (accelerate's ``--mpirun_hostfile``) exports no WORLD_SIZE; its own variables must give gloo too."""
    from hf_transfer.training.arguments import accelerator_available, multi_process_cpu

    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        clean_launch_env.delenv(name, raising=False)
    assert not multi_process_cpu()
    clean_launch_env.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert multi_process_cpu() == (not accelerator_available())
