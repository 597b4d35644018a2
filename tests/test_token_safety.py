"""A Hub token in the environment never reaches the run folder, the console or the logs."""

from __future__ import annotations

import logging

import yaml

from hf_transfer.cli import run_cli

FAKE_TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdefXYZ"


def test_hf_token_appears_in_no_output_file_nor_log(tiny_bert_dir, text_csv_data, tmp_path, monkeypatch, capfd, caplog):
    import transformers

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE_TOKEN)
    out = tmp_path / "run"
    recipe = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
              "data": {"path": str(text_csv_data), "max_length": 16},
              "training": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "logging_steps": 1},
              "output": {"dir": str(out), "keep_checkpoints": True, "tags": ["token-test"]}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_debug()
    try:
        with caplog.at_level(logging.DEBUG):
            assert run_cli(["finetune", str(path)]) == 0
    finally:
        transformers.logging.set_verbosity(verbosity)
    captured = capfd.readouterr()

    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "metrics.json").is_file() and any(p.name == "training_args.bin" for p in files)  # checkpoints kept
    leaks = [str(p.relative_to(out)) for p in files if FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"token written to {leaks}"
    assert caplog.records, "nothing was logged: the log check would prove nothing"
    for where, text in (("stdout", captured.out), ("stderr", captured.err), ("logs", caplog.text)):
        assert FAKE_TOKEN not in text, f"token in {where}"
        assert FAKE_TOKEN[:12] not in text, f"token prefix in {where}"
