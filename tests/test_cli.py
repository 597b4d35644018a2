"""The command line: user mistakes give one ``error:`` line and exit code 2; ``--debug`` shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_transfer.cli import EXIT_USER_ERROR, run_cli

REPO = Path(__file__).resolve().parents[1]
GOOD = {"task": "image-classification", "model": {"name_or_path": "resnet18"},
        "data": {"path": "sklearn:digits", "max_train_samples": 50}}


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """``check`` on a recipe with a misspelt key, with and without ``--debug``, run side by side."""
    bad = write_recipe(tmp_path_factory.mktemp("cli") / "bad.yaml",
                       {**GOOD, "data": {"path": "sklearn:digits", "image_colum": "image"}})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    commands = {"plain": ["check", str(bad)], "debug": ["--debug", "check", str(bad)]}
    processes = {name: subprocess.Popen([sys.executable, "-m", "hf_transfer.cli", *args], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, args in commands.items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (process.returncode, stdout, stderr)
    return results


def test_bad_recipe_exits_2_with_one_error_line(cli_runs):
    code, stdout, stderr = cli_runs["plain"]
    assert code == EXIT_USER_ERROR, stderr
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, stderr
    assert "'data.image_colum'" in error_lines[0]
    assert "Did you mean 'image_column'?" in error_lines[0]
    assert "bad.yaml" in error_lines[0]
    assert "OK:" not in stdout


def test_debug_shows_the_traceback(cli_runs):
    code, _, stderr = cli_runs["debug"]
    assert code not in (0, EXIT_USER_ERROR)
    assert "Traceback" in stderr
    assert "RecipeError" in stderr and "'data.image_colum'" in stderr


def test_check_good_recipe_in_process(tmp_path, capsys, tiny_timm_dir, image_folder_data):
    recipe = write_recipe(tmp_path / "colours.yaml", {"task": "image-classification",
                                                      "model": {"name_or_path": str(tiny_timm_dir)},
                                                      "data": {"path": str(image_folder_data)}})
    assert run_cli(["check", str(recipe)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "OK: 3 labels" in out
    assert '"model_type": "timm_wrapper"' in out


def test_set_override_errors_exit_2_in_process(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "digits.yaml", GOOD)
    assert run_cli(["check", str(recipe), "--set", "training.learning_rate=-1"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'training.learning_rate' must be > 0" in err


def test_data_error_exits_2_in_process(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "missing.yaml", {**GOOD, "data": {"path": str(tmp_path / "nowhere")}})
    assert run_cli(["check", str(recipe)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err


def test_missing_recipe_file_exits_2_in_process(tmp_path, capsys):
    assert run_cli(["check", str(tmp_path / "nope.yaml")]) == EXIT_USER_ERROR
    assert "nope.yaml' does not exist" in capsys.readouterr().err


def test_summary_shows_each_input_alone_and_the_fusion_gain(capsys):
    from hf_transfer.cli import _print_summary

    report = {"accuracy": 0.8, "f1_macro": 0.75}
    _print_summary({"test": report, "compare_modalities": {
        "split": "test", "runs": {"image-only": {"accuracy": 0.6, "f1_macro": 0.5},
                                  "text-only": {"accuracy": 0.7, "f1_macro": 0.72}, "fused": report},
        "fusion_gain": {"accuracy": 0.1, "f1_macro": 0.03}}}, "out")
    lines = capsys.readouterr().out.splitlines()
    assert "Each input alone vs fused (test split):" in lines
    assert any(line.split() == ["image-only", "accuracy", "60.00%", "macro-F1", "50.00%"] for line in lines)
    assert any(line.split() == ["text-only", "accuracy", "70.00%", "macro-F1", "72.00%"] for line in lines)
    assert any(line.split() == ["fused", "accuracy", "80.00%", "macro-F1", "75.00%"] for line in lines)
    assert any("fusion gain" in line and "+10.00%" in line and "+3.00%" in line for line in lines)
    _print_summary({"test": report}, "out")
    assert "fusion gain" not in capsys.readouterr().out


def _subcommands() -> dict:
    import argparse

    from hf_transfer.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **commands.choices}


def test_version(capsys):
    import hf_transfer

    with pytest.raises(SystemExit) as exited:
        run_cli(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"hf-transfer {hf_transfer.__version__}"


def test_help_of_every_command_has_no_rst_backticks(capsys):
    commands = _subcommands()
    assert {"finetune", "check", "evaluate", "predict", "push", "rank", "bench"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exited:
            run_cli([name, "--help"] if name else ["--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert "usage: hf-transfer" in text and "``" not in text, f"hf-transfer {name} --help:\n{text}"


@pytest.mark.parametrize("command", ["evaluate", "push", "predict"])
def test_every_argument_has_help(command):
    parser = _subcommands()[command]
    missing = [action.dest for action in parser._actions if not action.help]
    assert not missing, f"hf-transfer {command}: no help for {missing}"


def test_push_options_reach_push_folder(monkeypatch, tmp_path, capsys):
    import hf_transfer.hub

    seen = {}
    monkeypatch.setattr(hf_transfer.hub, "push_folder", lambda *args, **kwargs: seen.update(args=args, **kwargs)
                        or "https://huggingface.co/me/model/discussions/3")
    assert run_cli(["push", str(tmp_path), "me/model", "--revision", "dev", "--create-pr", "--commit-message",
                    "Fold results", "--private", "--include-subruns"]) == 0
    assert capsys.readouterr().out.strip() == "https://huggingface.co/me/model/discussions/3"
    assert seen == {"args": (str(tmp_path), "me/model"), "private": True, "commit_message": "Fold results",
                    "revision": "dev", "create_pr": True, "include_subruns": True}
    assert run_cli(["push", str(tmp_path), "me/model"]) == 0
    assert seen["revision"] is None and seen["create_pr"] is False and seen["include_subruns"] is False
    assert seen["commit_message"] is None and seen["private"] is False


def test_summary_gives_the_times_and_how_to_use_the_folder(capsys):
    from hf_transfer.cli import _print_summary

    report = {"accuracy": 0.8, "f1_macro": 0.75}
    _print_summary({"test": report, "train": {"runtime_s": 65.2}}, Path("runs/pets"), wall_s=83.4)
    out = capsys.readouterr().out
    assert "Wall time 1 min 23 s (training 1 min 05 s)." in out
    assert "Model folder: runs/pets" in out
    assert "hf-transfer predict runs/pets --image PATH | --text TEXT" in out
    assert "hf-transfer push runs/pets user/model-name" in out
    _print_summary({"test": report}, Path("runs/reviews"), roles=("text", "text_pair"))
    assert "hf-transfer predict runs/reviews --text TEXT\n" in capsys.readouterr().out
    _print_summary({"test": report}, Path("runs/posts"), roles=("image", "text", "text_pair"))
    assert "hf-transfer predict runs/posts --image PATH --text TEXT\n" in capsys.readouterr().out
    _print_summary({"test": report, "wall_s": 7200.0}, "out", pushed_to="me/pets")
    out = capsys.readouterr().out
    assert "Wall time 2 h 00 min." in out and "https://huggingface.co/me/pets" in out
    assert "hf-transfer push" not in out
