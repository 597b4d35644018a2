"""Checkpoints are complete (manifest matches every file) or skipped with a warning naming them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_transfer.training.checkpoints import MANIFEST, checkpoint_problem, last_complete_checkpoint, write_manifest


def fake_checkpoint(root: Path, step: int, manifest: bool = True, skip: tuple[str, ...] = ()) -> Path:
    """The files ``Trainer._save_checkpoint`` writes, small; ``skip`` leaves some out."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    files = {
        "model.safetensors": lambda p: save_file({"w": torch.randn(64, 64)}, p),
        "config.json": lambda p: p.write_text("{}"),
        "optimizer.pt": lambda p: torch.save({"state": {0: {"exp_avg": torch.randn(64, 64)}}}, p),
        "scheduler.pt": lambda p: torch.save({"last_epoch": step}, p),
        "rng_state.pth": lambda p: torch.save({"cpu": torch.random.get_rng_state()}, p),
        "trainer_state.json": lambda p: p.write_text(json.dumps({"global_step": step, "log_history": []})),
    }
    for name, write in files.items():
        if name not in skip:
            write(folder / name)
    if manifest:
        write_manifest(folder)
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "no manifest (killed during the save)": (lambda f: (f / MANIFEST).unlink(), "save never finished"),
    "truncated model.safetensors": (lambda f: truncate(f / "model.safetensors"), "model.safetensors is truncated"),
    "missing optimizer": (lambda f: (f / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "scheduler with a flipped byte": (lambda f: flip_a_byte(f / "scheduler.pt"), "scheduler.pt is corrupt"),
    "truncated rng state": (lambda f: truncate(f / "rng_state.pth"), "rng_state.pth is truncated"),
    "truncated trainer_state.json": (lambda f: truncate(f / "trainer_state.json"), "trainer_state.json is trunc"),
    "unreadable manifest": (lambda f: (f / MANIFEST).write_text("{"), "unreadable"),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_newest_checkpoint_is_skipped_named_removed_and_the_previous_one_used(tmp_path, caplog, damage):
    corrupt, reason = damage
    good = fake_checkpoint(tmp_path, 4)
    bad = fake_checkpoint(tmp_path, 8)
    assert checkpoint_problem(good) is None and checkpoint_problem(bad) is None
    corrupt(bad)
    with caplog.at_level(logging.WARNING, logger="hf_transfer"):
        assert last_complete_checkpoint(tmp_path) == str(good)  # look only: nothing removed
        assert bad.is_dir()
        assert last_complete_checkpoint(tmp_path, remove_bad=True) == str(good)
    assert f"Checkpoint {bad} is partial or corrupt" in caplog.text and reason in caplog.text
    assert not bad.exists() and good.is_dir()


@pytest.mark.parametrize("missing", ["trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                     "model.safetensors"])
def test_a_manifest_over_an_incomplete_save_does_not_make_it_complete(tmp_path, missing):
    folder = fake_checkpoint(tmp_path, 3, skip=(missing,))
    assert missing in checkpoint_problem(folder)
    assert last_complete_checkpoint(tmp_path) is None


def test_trainer_state_of_another_step_is_refused(tmp_path):
    folder = fake_checkpoint(tmp_path, 5)
    (folder / "trainer_state.json").rename(tmp_path / "state")
    (tmp_path / "state").write_text(json.dumps({"global_step": 4}))
    (tmp_path / "state").rename(folder / "trainer_state.json")
    write_manifest(folder)
    assert "for step 4" in checkpoint_problem(folder)


def test_newest_complete_checkpoint_wins_by_step_number_and_nothing_means_a_fresh_start(tmp_path):
    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step in (9, 10, 100):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-notes").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-100")
    only_partial = tmp_path / "other"
    fake_checkpoint(only_partial, 2, manifest=False)
    assert last_complete_checkpoint(only_partial, remove_bad=True) is None
    assert not (only_partial / "checkpoint-2").exists()


def test_save_only_model_checkpoints_need_no_optimizer_or_rng_state(tmp_path):
    folder = fake_checkpoint(tmp_path, 2, manifest=False, skip=("optimizer.pt", "scheduler.pt", "rng_state.pth"))
    write_manifest(folder, save_only_model=True)
    assert checkpoint_problem(folder) is None


def test_trainer_checkpoints_carry_a_matching_manifest(tiny_bert_dir, text_csv_data, tmp_path):
    """A real run: every checkpoint the Trainer wrote is marked complete, with the files it holds."""
    from hf_transfer import Recipe, finetune

    out = tmp_path / "run"
    finetune(Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 16},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "disable_tqdm": True},
        "output": {"dir": str(out), "keep_checkpoints": True}}))
    folders = list((out / "checkpoints").glob("checkpoint-*"))
    assert folders
    for folder in folders:
        assert checkpoint_problem(folder) is None
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                "trainer_state.json"} <= set(listed)
