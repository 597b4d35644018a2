"""Hugging Face conventions of a finished run: TensorBoard logs survive in ``<dir>/logs``, the example scripts'
``trainer_state.json`` and ``*_results.json`` files, a clean ``tokenizer_config.json``, managed hub/logging keys
refused, and one INFO line instead of transformers' LOAD REPORT table for the new classification head."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_transfer import Recipe, finetune
from hf_transfer.errors import RecipeError
from hf_transfer.tasks.base import get_task
from hf_transfer.tasks.text import LOADING_ONLY_KEYS, strip_loading_options
from hf_transfer.training.arguments import build_training_arguments
from hf_transfer.training.outputs import (CHECKPOINTS, LOGS, METRICS_FILE, TENSORBOARD_ENV, RunFolder,
                                          read_owner)

from conftest import write_text_csv

RESULT_FILES = ("trainer_state.json", "all_results.json", "train_results.json", "eval_results.json",
                "test_results.json")


def text_recipe(model: Path, data: Path, out: Path, **training) -> Recipe:
    return Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(model)},
        "data": {"path": str(data), "max_length": 16},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "logging_steps": 1,
                     "disable_tqdm": True, **training},
        "output": {"dir": str(out)}})


@pytest.fixture(scope="module")
def finished(tiny_bert_dir, text_csv_data, tmp_path_factory):
    """A finished tiny text run that reported to TensorBoard, and its FinetuneResult."""
    out = tmp_path_factory.mktemp("tb") / "run"
    before = os.environ.get(TENSORBOARD_ENV)
    result = finetune(text_recipe(tiny_bert_dir, text_csv_data, out, report_to="tensorboard"))
    assert os.environ.get(TENSORBOARD_ENV) == before  # the run's own setting ends with the run
    return out, result


# ----------------------------------------------------------------------------- tracker logs
def test_a_finished_run_keeps_its_tensorboard_logs_in_logs(finished):
    out, result = finished
    events = sorted(out.glob(f"{LOGS}/**/events.out.tfevents.*"))
    assert events, sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert not (out / CHECKPOINTS).exists()  # the checkpoints went, the logs stayed
    assert LOGS in read_owner(out).entries

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert "train/loss" in scalars and "eval/accuracy" in scalars


def test_tensorboard_writes_to_logs_only_inside_a_claimed_run(tmp_path, monkeypatch):
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    folder = RunFolder(tmp_path / "run")
    build_training_arguments({"report_to": "tensorboard"}, folder.checkpoints, {})  # a pre-flight check
    assert TENSORBOARD_ENV not in os.environ and not folder.path.exists()
    with folder.claimed("task: text-classification\n"):
        build_training_arguments({"report_to": "tensorboard"}, folder.checkpoints, {})
        assert os.environ[TENSORBOARD_ENV] == str(folder.logs.absolute())
        assert LOGS in read_owner(folder.path).entries
    assert TENSORBOARD_ENV not in os.environ


def test_no_tensorboard_no_logs_entry(tmp_path, monkeypatch):
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    folder = RunFolder(tmp_path / "run")
    with folder.claimed("task: text-classification\n"):
        build_training_arguments({"report_to": "none"}, folder.checkpoints, {})
        assert TENSORBOARD_ENV not in os.environ and LOGS not in read_owner(folder.path).entries


def test_a_tensorboard_dir_the_user_exported_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv(TENSORBOARD_ENV, str(tmp_path / "my_logs"))
    folder = RunFolder(tmp_path / "run")
    with folder.claimed("task: text-classification\n"):
        build_training_arguments({"report_to": "tensorboard"}, folder.checkpoints, {})
        assert os.environ[TENSORBOARD_ENV] == str(tmp_path / "my_logs")
        assert LOGS not in read_owner(folder.path).entries  # not ours: never set aside or removed with the run
    assert os.environ[TENSORBOARD_ENV] == str(tmp_path / "my_logs")


def test_logging_dir_is_refused_with_where_the_logs_go(tmp_path, tiny_bert_dir, text_csv_data):
    with pytest.raises(RecipeError, match=r"training\.logging_dir.*<output\.dir>/logs"):
        text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "out", logging_dir=str(tmp_path / "tb"))
    with pytest.raises(RecipeError, match="<output.dir>/logs"):
        build_training_arguments({"logging_dir": str(tmp_path / "tb")}, tmp_path / CHECKPOINTS, {})


@pytest.mark.parametrize("key, value", [("hub_strategy", "every_save"), ("hub_always_push", True)])
def test_hub_strategy_is_refused_at_validation(key, value, tmp_path, tiny_bert_dir, text_csv_data):
    with pytest.raises(RecipeError) as error:
        text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "out", **{key: value})
    message = str(error.value)
    assert "\n" not in message and f"'training.{key}'" in message
    assert "not pushed during training" in message and "output.push_to_hub" in message


# ----------------------------------------------------------------------------- the example scripts' files
def test_trainer_state_and_results_files_hold_the_runs_numbers(finished):
    out, result = finished
    metrics = json.loads((out / METRICS_FILE).read_text())
    entries = read_owner(out).entries
    for name in RESULT_FILES:
        assert (out / name).is_file() and name in entries, name
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == metrics["train"]["steps"] > 0
    assert state["best_metric"] == metrics["train"]["best_checkpoint_metric"]
    assert state["best_model_checkpoint"].startswith(f"{CHECKPOINTS}/checkpoint-")  # relative: no local path pushed
    assert any("eval_accuracy" in entry for entry in state["log_history"])

    train = json.loads((out / "train_results.json").read_text())
    assert train["epoch"] == metrics["train"]["epochs"] == 2.0
    assert round(train["train_runtime"], 2) == metrics["train"]["runtime_s"] and train["train_loss"] > 0
    assert train["train_samples"] == 36  # 40 rows less the 10 % validation carve
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert evaluation["eval_accuracy"] == metrics["validation"]["accuracy"]
    assert evaluation["eval_loss"] == metrics["validation"]["loss"]
    assert evaluation["eval_f1_macro"] == metrics["validation"]["f1_macro"]
    assert evaluation["eval_samples"] == metrics["validation"]["num_samples"] == 4
    test = json.loads((out / "test_results.json").read_text())
    assert test["test_accuracy"] == metrics["test"]["accuracy"] and test["test_samples"] == 12
    combined = json.loads((out / "all_results.json").read_text())
    assert combined == {**train, **evaluation, **test}


def test_no_test_split_no_test_results(tiny_bert_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    from conftest import make_sentences

    write_text_csv(data / "train.csv", make_sentences(20, seed=0))
    out = tmp_path / "run"
    finetune(text_recipe(tiny_bert_dir, data, out, num_train_epochs=1))
    assert (out / "eval_results.json").is_file() and not (out / "test_results.json").exists()
    assert set(json.loads((out / "all_results.json").read_text())) >= {"eval_accuracy", "train_loss"}
    assert not (out / LOGS).exists() and LOGS not in read_owner(out).entries  # report_to: none


# ----------------------------------------------------------------------------- tokenizer_config.json
def test_the_saved_tokenizer_config_holds_no_loading_options(finished, tiny_bert_dir, tmp_path):
    out, _ = finished
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert not set(LOADING_ONLY_KEYS) & set(config), config
    assert config["tokenizer_class"] and config["model_max_length"] == 64
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(tiny_bert_dir).get_vocab()


def test_strip_loading_options_removes_what_loading_added(tiny_bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    tokenizer.save_pretrained(tmp_path)
    before = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert before.get("local_files_only") is True and before.get("is_local") is True  # what transformers 5 saves
    assert sorted(strip_loading_options(tmp_path)) == ["is_local", "local_files_only"]
    after = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert after == {k: v for k, v in before.items() if k not in ("is_local", "local_files_only")}
    assert strip_loading_options(tmp_path) == [] and strip_loading_options(tmp_path / "absent") == []


# ----------------------------------------------------------------------------- the new head's load report
def three_labels(tmp_path: Path) -> Path:
    rows = [(f"good film {i}", ("positive", "negative", "neutral")[i % 3]) for i in range(12)]
    data = tmp_path / "three"
    data.mkdir()
    write_text_csv(data / "train.csv", rows)
    return data


class Records(logging.Handler):
    """Every record that reaches transformers' root logger (its own stderr handler prints the same ones)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def printed(self, text: str) -> bool:
        return any(text in message for message in self.messages)


@pytest.fixture
def transformers_log():
    handler = Records()
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def test_the_load_report_is_what_transformers_prints_for_a_new_head(tiny_bert_dir, transformers_log):
    AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3, ignore_mismatched_sizes=True)
    assert transformers_log.printed("LOAD REPORT")  # what the next tests expect to be gone


def test_a_new_text_head_is_one_info_line_and_no_load_report(tiny_bert_dir, tmp_path, transformers_log, caplog):
    recipe = text_recipe(tiny_bert_dir, three_labels(tmp_path), tmp_path / "out")
    with caplog.at_level(logging.INFO):
        model, _ = get_task("text-classification").load_model(recipe, ["negative", "neutral", "positive"])
    assert model.config.num_labels == 3
    assert not transformers_log.printed("LOAD REPORT") and "LOAD REPORT" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if "classification head" in r.getMessage()]
    assert lines == [f"new classification head for 3 labels: classifier.bias, classifier.weight; the backbone's "
                     f"weights loaded from {tiny_bert_dir}"]
    assert all(r.levelno == logging.INFO for r in caplog.records if "classification head" in r.getMessage())


def test_a_new_image_head_is_one_info_line_and_no_load_report(tiny_timm_dir, image_folder_data, tmp_path,
                                                                transformers_log, caplog):
    recipe = Recipe.from_dict({"task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
                               "data": {"path": str(image_folder_data), "image_size": 16},
                               "output": {"dir": str(tmp_path / "out")}})
    with caplog.at_level(logging.INFO):
        model, _ = get_task("image-classification").load_model(recipe, ["green", "red"])
    assert model.config.num_labels == 2
    assert not transformers_log.printed("LOAD REPORT") and "LOAD REPORT" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if "classification head" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("new classification head for 2 labels: timm_model.classifier.")
    assert lines[0].endswith(f"the backbone's weights loaded from {tiny_timm_dir}")


def test_a_head_that_already_fits_is_said_so(tiny_bert_dir, text_csv_data, tmp_path, caplog):
    recipe = text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        get_task("text-classification").load_model(recipe, ["negative", "positive"])
    assert "all weights loaded from" in caplog.text and "new classification head" not in caplog.text


def test_an_offline_run_with_push_to_hub_finishes_and_says_how_to_push(tiny_bert_dir, text_csv_data, tmp_path,
                                                                       monkeypatch, caplog):
    """Offline, the push cannot work: known before training, so the finished run is not turned into a failure."""
    import hf_transfer.training.export as export

    monkeypatch.setattr(export, "push_folder", lambda *a, **k: pytest.fail("pushed while offline"))
    monkeypatch.setattr(export, "hub_offline", lambda: True)
    monkeypatch.setattr("hf_transfer.hub.hub_offline", lambda: True)
    recipe = Recipe.from_dict({**text_recipe(tiny_bert_dir, text_csv_data, tmp_path / "run").to_dict(),
                               "output": {"dir": str(tmp_path / "run"), "push_to_hub": True,
                                          "hub_model_id": "me/tiny"}})
    with caplog.at_level(logging.WARNING):
        finetune(recipe)
    assert (tmp_path / "run" / METRICS_FILE).is_file()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "was not pushed" in said and f"hf-transfer push {tmp_path / 'run'} me/tiny" in said
