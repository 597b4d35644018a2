"""torch's intra-op thread count per run: the user's OMP_NUM_THREADS wins, else cores for this process alone."""

from __future__ import annotations

import logging

import pytest
import torch

from hf_transfer import finetune
from hf_transfer.training.threads import choose_threads, local_processes, torch_threads, usable_cores

from test_end_to_end import text_recipe

NO_USER = {}  # an environment without OMP_NUM_THREADS / MKL_NUM_THREADS


@pytest.fixture
def many_threads():
    """torch on 64 threads for the test (the choice never raises the count), put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(64)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, busy, processes, workers, expected", [
    (16, 0, 1, 0, 16), (16, 0, 1, 3, 13), (16, 0, 2, 3, 5), (8, 0, 1, 20, 1), (2, 0, 1, 2, 1),
    (8, 6, 1, 0, 2), (2, 4, 1, 0, 1)])
def test_threads_are_the_free_cores_per_process_less_the_workers(cores, busy, processes, workers, expected,
                                                                 many_threads):
    choice = choose_threads(workers, processes, cached_head=False, environ=NO_USER, cores=cores, busy=busy)
    assert choice.threads == expected and f"{cores} cores" in choice.reason
    assert ("busy" in choice.reason) == bool(busy)


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_a_user_set_thread_variable_is_respected(variable, many_threads):
    choice = choose_threads(4, 1, cached_head=True, environ={variable: "3"}, cores=16, busy=0)
    assert choice.threads == torch.get_num_threads() == 64 and f"{variable}=3" in choice.reason


def test_a_cached_head_trains_on_one_thread_and_a_lower_count_is_never_raised(many_threads):
    assert choose_threads(0, 1, cached_head=True, environ=NO_USER, cores=16, busy=0).threads == 1
    torch.set_num_threads(2)
    choice = choose_threads(0, 1, cached_head=False, environ=NO_USER, cores=16, busy=0)
    assert choice.threads == 2 and "already set" in choice.reason


def test_cores_follow_a_cgroup_cpu_quota(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert usable_cores(quota) == min(2, usable_cores(tmp_path / "absent"))
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == usable_cores(tmp_path / "absent") >= 1


def test_local_processes_read_torchrun(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_processes(8) == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert local_processes(3) == 3


def test_the_count_is_set_for_the_block_and_put_back(many_threads, caplog):
    choice = choose_threads(3, 1, cached_head=False, environ=NO_USER, cores=8, busy=0)
    with caplog.at_level(logging.INFO, logger="hf_transfer.training.threads"), torch_threads(choice):
        assert torch.get_num_threads() == 5
    assert torch.get_num_threads() == 64 and "torch threads: 5 (8 cores" in caplog.text


def test_a_run_logs_and_records_its_choice(tiny_bert_dir, text_csv_data, tmp_path, monkeypatch, caplog):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    before = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="hf_transfer.training.threads"):
        metrics = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "run",
                                       training={"num_train_epochs": 1})).metrics
    recorded = metrics["train"]["torch_threads"]
    assert 1 <= recorded["threads"] <= before and recorded["workers"] == 0 and recorded["processes"] == 1
    assert caplog.text.count("torch threads:") == 1 and torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))
    again = finetune(text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "again",
                                 training={"num_train_epochs": 1})).metrics["train"]["torch_threads"]
    assert again["threads"] == before and again["reason"] == f"OMP_NUM_THREADS={before} is set"


def test_busy_cores_reads_the_runnable_threads_now_not_the_lagging_load_average(tmp_path):
    """A machine whose 1-minute load is high from a finished run but idle now must not starve the next run."""
    import os

    from hf_transfer.training.threads import busy_cores

    cores = os.cpu_count() or 1
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("9.50 8.00 7.00 1/300 12345\n")  # high averages, only this process runnable
    assert busy_cores(cores, processes=1, loadavg=loadavg, samples=2) == 0
    loadavg.write_text("0.10 0.10 0.10 3/300 12345\n")  # two other threads runnable now
    assert busy_cores(cores, processes=1, loadavg=loadavg, samples=2) == min(cores, 2)
    assert busy_cores(cores, processes=1, loadavg=tmp_path / "missing", samples=2) == 0


def test_the_count_follows_the_other_work_during_a_run(many_threads, caplog):
    from types import SimpleNamespace

    from hf_transfer.training.threads import RECHECK_S, ThreadChoice, ThreadRecheck

    torch.set_num_threads(1)  # chosen at the start, beside other work on one of two cores
    choice = ThreadChoice(1, "2 cores, 1 busy with other work", cores=2, workers=0, processes=1, ceiling=64)
    now, busy = [0.0], [0]
    recheck = ThreadRecheck(choice, clock=lambda: now[0], others=lambda: busy[0])
    state = SimpleNamespace(global_step=1)
    with caplog.at_level(logging.INFO, logger="hf_transfer.training.threads"):
        recheck.on_step_end(None, state, None)
        now[0], state.global_step = RECHECK_S / 2, 5
        recheck.on_step_end(None, state, None)
        assert torch.get_num_threads() == 1  # not looked at again yet
        now[0], state.global_step = RECHECK_S + 1, 9
        recheck.on_step_end(None, state, None)
        assert torch.get_num_threads() == 2  # the other work ended: both cores
        busy[0], now[0], state.global_step = 5, 2 * RECHECK_S + 2, 20
        recheck.on_step_end(None, state, None)
        assert torch.get_num_threads() == 1  # others came back
    assert recheck.report() == {"changes": [{"step": 9, "threads": 2, "busy": 0},
                                            {"step": 20, "threads": 1, "busy": 5}]}
    assert "torch threads: 2 from step 9" in caplog.text

    capped = ThreadRecheck(ThreadChoice(1, "", cores=8, workers=2, processes=1, ceiling=3), clock=lambda: now[0],
                           others=lambda: 0)
    capped.on_step_end(None, state, None)
    now[0] += RECHECK_S
    capped.on_step_end(None, state, None)
    assert torch.get_num_threads() == 3  # 8 - 2 workers = 6 free, but never above the count before the run


def test_only_a_single_automatic_choice_is_looked_at_again(many_threads):
    import os

    cores = os.cpu_count()
    assert choose_threads(0, 1, cached_head=False, environ=NO_USER, cores=cores, busy=0).ceiling == 64
    assert choose_threads(0, 2, cached_head=False, environ=NO_USER, cores=cores, busy=0).ceiling == 0
    assert choose_threads(0, 1, cached_head=True, environ=NO_USER, cores=cores, busy=0).ceiling == 0
    assert choose_threads(0, 1, cached_head=False, environ={"OMP_NUM_THREADS": "2"}, cores=cores).ceiling == 0


def test_other_runnable_threads_leave_out_this_process_and_its_children(tmp_path):
    from hf_transfer.training.threads import others_runnable

    def task(pid: int, tid: int, state: str, parent: int) -> None:
        folder = tmp_path / str(pid)
        (folder / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
        line = f"{tid} (py thon) {state} {parent} 1 1"
        (folder / "task" / str(tid) / "stat").write_text(line)
        if tid == pid:
            (folder / "stat").write_text(line)

    (tmp_path / "loadavg").write_text("1.00 1.00 1.00 6/300 999\n")
    task(100, 100, "R", 1)
    task(100, 101, "R", 1)  # this run's own threads
    task(100, 102, "S", 1)
    task(200, 200, "R", 100)  # a data-loader worker
    task(300, 300, "R", 1)
    task(300, 301, "R", 1)  # another job's two threads
    assert others_runnable(tmp_path, pid=100, samples=2) == 3  # 6 runnable less this run's 3
    (tmp_path / "loadavg").write_text("garbled")
    assert others_runnable(tmp_path, pid=100) is None
    assert others_runnable() is not None and others_runnable() >= 0  # this machine's /proc
