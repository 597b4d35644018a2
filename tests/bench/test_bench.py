"""The benchmark harness: timing, report shape and argument errors (speed itself is never asserted)."""

from __future__ import annotations

import pytest

from hf_transfer.bench import RUNNERS, SCENARIOS, StepClock, markdown_table
from hf_transfer.bench.switches import SWITCHES as MEASURED_SWITCHES
from hf_transfer.cli import EXIT_USER_ERROR, run_cli

REQUIRED = {"image_full_ft", "image_linear_probe", "text_full_ft", "text_linear_probe", "image_eval", "text_eval"}


def test_every_scenario_the_issue_names_is_registered():
    assert REQUIRED <= set(SCENARIOS)
    assert all(SCENARIOS[name].frozen_backbone == name.endswith("linear_probe") for name in REQUIRED)
    assert RUNNERS == ("raw", "naive_trainer", "hf_transfer")


def test_step_clock_ignores_warm_up_steps(monkeypatch):
    """A fake clock: step 1 takes 100 s (warm-up, not counted), steps 3-5 take 2 s each."""
    ticks = iter([0.0, 100.0, 102.0, 104.0, 106.0, 106.0, 106.0, 106.0])
    monkeypatch.setattr("hf_transfer.bench.clock.time.perf_counter", lambda: next(ticks))
    clock = StepClock(warmup=2)
    for _ in range(5):
        clock.tick()
    assert clock.samples_per_s(32) == pytest.approx(32 * 3 / 6.0)


def test_markdown_table_lists_each_scenario_and_the_cache_speedup():
    row = {"name": "image_linear_probe", "measures": "train", "ratio_vs_raw": 2.0, "ratio_vs_naive": 3.0,
           "samples_per_s": {"raw": 10.0, "naive_trainer": 6.7, "hf_transfer": 20.0},
           "peak_rss_mb": {"raw": 100.0, "naive_trainer": 110.0, "hf_transfer": 120.0},
           "feature_cache": {"first_run_s": 30.0, "cached_run_s": 1.0, "speedup": 30.0}}
    table = markdown_table({"scenarios": [row, {**row, "name": "image_eval", "feature_cache": None}]})
    lines = table.splitlines()
    assert len(lines) == 4 and "image_linear_probe" in lines[2] and "(30.0x)" in lines[2]
    assert lines[3].rstrip().endswith("|  |")


def test_unknown_scenario_is_a_user_error(tmp_path, capsys):
    code = run_cli(["bench", "--scenarios", "image_ful_ft", "--output", str(tmp_path / "b.json")])
    assert code == EXIT_USER_ERROR
    assert "image_ful_ft" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_switches_are_interleaved_compared_to_the_defaults_and_failures_reported(monkeypatch, tmp_path):
    import json

    import hf_transfer.bench.switches as switches
    from hf_transfer.bench import BenchSettings

    class Workload:
        train_steps = 4

    calls = []

    def fake_run(workload, overrides=None):
        overrides = overrides or {}
        calls.append(dict(overrides))
        if overrides.get("training.torch_compile"):
            raise RuntimeError("no C compiler")
        speed = 2.0 if overrides.get("training.bf16") else 1.0
        return {"train": 10.0 * speed, "eval": 30.0, "end_to_end_s": 5.0 / speed}

    monkeypatch.setattr(switches, "build_workload", lambda scenario, settings: Workload())
    monkeypatch.setattr(switches, "hf_transfer_once", fake_run)
    settings = BenchSettings(repeats=2, shared=tmp_path)
    report = switches.run_switch_benchmarks(["text_full_ft"], settings, tmp_path / "s.json")
    rows = report["scenarios"][0]["switches"]
    assert "channels_last_off" not in rows  # an image-only switch
    assert rows["bf16"]["vs_defaults"] == 2.0 and rows["defaults"]["vs_defaults"] == 1.0
    assert rows["torch_compile"]["samples_per_s"] is None and "no C compiler" in rows["torch_compile"]["error"]
    # an untimed warm-up, then the second repeat in reverse order; the failed switch is not retried
    assert [c.get("training.bf16", False) for c in calls] == [False, False, False, True, True, False]
    assert json.loads((tmp_path / "s.json").read_text())["scenarios"][0]["name"] == "text_full_ft"
    assert "| text_full_ft | bf16 | 20.0 | 2.0 |" in switches.switches_table(report)


def test_named_switches_are_measured_alone_against_the_defaults(monkeypatch, tmp_path):
    import hf_transfer.bench.switches as switches
    from hf_transfer.bench import BenchSettings

    class Workload:
        train_steps = 4

    calls = []
    monkeypatch.setattr(switches, "build_workload", lambda scenario, settings: Workload())
    monkeypatch.setattr(switches, "hf_transfer_once", lambda workload, overrides=None: calls.append(overrides or {})
                        or {"train": 10.0, "eval": 30.0, "end_to_end_s": 5.0})
    report = switches.run_switch_benchmarks(["image_full_ft"], BenchSettings(repeats=1, shared=tmp_path),
                                            tmp_path / "s.json", only=["torch_compile"])
    assert set(report["scenarios"][0]["switches"]) == {"defaults", "torch_compile"}
    assert not any("training.bf16" in c for c in calls)


def test_an_unknown_switch_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["bench", "--switches", "fp8", "--output", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    assert "fp8" in capsys.readouterr().err


@pytest.mark.parametrize("switch", sorted(set(MEASURED_SWITCHES) - {"defaults"}))
def test_the_cli_accepts_every_measured_switch(switch, monkeypatch, tmp_path):
    """Each switch the bench measures passes the command line (the run itself is replaced)."""
    from hf_transfer.bench import switches

    seen = {}
    monkeypatch.setattr(switches, "run_switch_benchmarks", lambda scenarios, settings, output, only: seen.update(
        only=only) or {"scenarios": []})
    monkeypatch.setattr(switches, "switches_table", lambda report: "")
    (tmp_path / "data").mkdir()
    assert run_cli(["bench", "--shared", str(tmp_path), "--switches", switch, "--output", str(tmp_path / "b.json")]) == 0
    assert seen["only"] == [switch]
