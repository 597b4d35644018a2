"""A corpus of things users get wrong, each run through the real CLI (``hf-transfer finetune``).

Every case must end with exit code 2, one ``error:`` line with the key words (what, where, how to fix),
no traceback, and an output folder exactly as it was before: nothing half-written that looks finished.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from conftest import make_sentences, write_colour_images
from hf_transfer.cli import EXIT_USER_ERROR, run_cli

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Models:
    bert: Path
    timm: Path


@dataclass
class Case:
    id: str
    build: Callable[[Path, Models], dict]
    """Writes whatever data the case needs under the folder and returns the recipe (a dict)."""
    words: tuple[str, ...]
    sets: list[str] = field(default_factory=list)


def write_csv(path: Path, header: list[str], rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def text_data(root: Path, train: list | None = None, test: list | None = None, header=("text", "label")) -> Path:
    write_csv(root / "data" / "train.csv", list(header), train if train is not None else make_sentences(20, 0))
    write_csv(root / "data" / "test.csv", list(header), test if test is not None else make_sentences(6, 1))
    return root / "data"


def text_recipe(root: Path, models: Models, data: dict | None = None, **sections) -> dict:
    data = dict(data or {})
    if "path" not in data:
        data["path"] = str(text_data(root))
    recipe = {"task": "text-classification", "model": {"name_or_path": str(models.bert)},
              "data": {"max_length": 16, **data},
              "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "disable_tqdm": True},
              "output": {"dir": str(root / "out")}}
    recipe.update(sections)
    return recipe


def image_data(root: Path, bad: dict[str, bytes]) -> Path:
    """An imagefolder of 4 good PNGs per class plus ``bad`` files (``class/name`` -> bytes)."""
    data = root / "images"
    write_colour_images(data / "train", {"red": 4, "green": 4}, seed=0, size=8)
    for name, content in bad.items():
        (data / "train" / name).write_bytes(content)
    return data


def image_recipe(root: Path, models: Models, bad: dict[str, bytes]) -> dict:
    return {"task": "image-classification", "model": {"name_or_path": str(models.timm)},
            "data": {"path": str(image_data(root, bad)), "image_size": 16},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "dataloader_num_workers": 0,
                         "disable_tqdm": True},
            "output": {"dir": str(root / "out")}}


def png_bytes(size: int = 32) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def with_training(**values) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        recipe = text_recipe(root, models)
        recipe["training"].update(values)
        return recipe
    return build


def text_rows(rows: list) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        return text_recipe(root, models, data={"path": str(text_data(root, train=rows))})
    return build


def good_rows(count: int = 18) -> list:
    return [list(row) for row in make_sentences(count, 2)]


def with_output(prepare: Callable[[Path], None]) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        prepare(root / "out")
        return text_recipe(root, models)
    return build


def foreign_folder(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("my thesis")


def other_unfinished_run(out: Path) -> None:
    from hf_transfer.training.outputs import RunFolder

    other = yaml.safe_dump({"task": "text-classification", "model": {"name_or_path": "x"}, "data": {"path": "elsewhere"}})
    with RunFolder(out).claimed(other):
        (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)


def model_folder(kind: str) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        if kind == "missing":
            return text_recipe(root, models, model={"name_or_path": str(root / "no_such_model")})
        if kind == "bert_for_images":
            recipe = image_recipe(root, models, {})
            recipe["model"]["name_or_path"] = str(models.bert)
            return recipe
        if kind == "timm_for_text":
            return text_recipe(root, models, model={"name_or_path": str(models.timm)})
        folder = root / "model"
        folder.mkdir()
        if kind == "bad_json":
            (folder / "config.json").write_text("{not json")
        if kind == "pickle_only":  # a legacy folder: config.json and pytorch_model.bin, no safetensors
            (folder / "config.json").write_bytes((models.bert / "config.json").read_bytes())
            (folder / "pytorch_model.bin").write_bytes(b"not read: pickles are refused unopened")
        return text_recipe(root, models, model={"name_or_path": str(folder)})
    return build


def raw_recipe(text: str) -> Callable[[Path, Models], dict]:
    """Recipe cases that never reach the data: the dict is turned into YAML as is."""
    def build(root: Path, models: Models) -> dict:
        recipe = text_recipe(root, models)
        recipe.update(yaml.safe_load(text) or {})
        return {k: v for k, v in recipe.items() if v != "DROP"}
    return build


TINY_TRUNCATED = png_bytes()[:120]

CASES = [
    # --- recipe: unknown keys, wrong types, impossible or absurd values
    Case("unknown_section", raw_recipe("trainig: {num_train_epochs: 1}"), ("Unknown key 'trainig'", "Did you mean 'training'")),
    Case("misspelt_data_key", raw_recipe("data: {path: x, imge_size: 64}"), ("'data.imge_size'", "image_size")),
    Case("unknown_training_key", with_training(learning_rte=1e-3), ("'training.learning_rte'", "learning_rate")),
    Case("negative_learning_rate", with_training(), ("learning_rate", "must be > 0"), ["training.learning_rate=-1e-3"]),
    Case("absurd_learning_rate", with_training(), ("learning_rate", "far too large"), ["training.learning_rate=1e3"]),
    Case("nan_learning_rate", with_training(), ("learning_rate",), ["training.learning_rate=.nan"]),
    Case("zero_batch_size", with_training(per_device_train_batch_size=0), ("per_device_train_batch_size", "> 0")),
    Case("fractional_batch_size", with_training(per_device_train_batch_size=2.5), ("per_device_train_batch_size", "whole number")),
    Case("absurd_epochs", with_training(num_train_epochs=1e9), ("num_train_epochs", "far too large")),
    Case("negative_weight_decay", with_training(weight_decay=-0.1), ("weight_decay", "too small")),
    Case("epochs_not_a_number", with_training(num_train_epochs="three"), ("num_train_epochs", "must be a number")),
    Case("managed_training_key", with_training(output_dir="/tmp/x"), ("training.output_dir", "output")),
    Case("validation_fraction_above_one", with_training(), ("validation_fraction",), ["data.validation_fraction=1.5"]),
    Case("absurd_max_length", with_training(), ("max_length", "8192"), ["data.max_length=1000000"]),
    Case("unknown_strategy", raw_recipe("strategy: {name: linear_prob}"), ("Unknown strategy 'linear_prob'", "linear_probe")),
    Case("unknown_task", raw_recipe("task: text-clasification"), ("Unknown task", "text-classification")),
    Case("missing_model_section", raw_recipe("model: DROP"), ("Missing required section 'model'",)),
    Case("override_not_yaml", with_training(), ("training.learning_rate=[1,", "not valid YAML"), ["training.learning_rate=[1,"]),
    Case("bad_example_policy", with_training(), ("data.on_bad_example", "'error', 'skip'"), ["data.on_bad_example=maybe"]),
    Case("nonfinite_loss_policy", with_training(), ("evaluation.on_nonfinite_loss", "'stop', 'skip'"),
         ["evaluation.on_nonfinite_loss=ignore"]),
    Case("name_escapes_runs", raw_recipe("name: ../../escape"), ("'name'", "plain name")),
    # --- images
    Case("truncated_png", lambda r, m: image_recipe(r, m, {"red/cut.png": TINY_TRUNCATED}), ("cut.png", "truncated", "on_bad_example")),
    Case("text_file_named_png", lambda r, m: image_recipe(r, m, {"green/notes.png": b"not a picture"}), ("notes.png", "not a readable image")),
    Case("empty_jpg", lambda r, m: image_recipe(r, m, {"red/empty.jpg": b""}), ("empty.jpg", "not a readable image")),
    # --- text rows and labels
    Case("empty_text", text_rows(good_rows() + [["", "positive"]]), ("train split", "row 18", "'text' is empty")),
    Case("whitespace_text", text_rows(good_rows() + [["   \t ", "negative"]]), ("row 18", "whitespace")),
    Case("missing_label", text_rows(good_rows() + [["good film", ""]]), ("row 18", "label", "missing")),
    Case("nan_integer_label", lambda r, m: text_recipe(r, m, data={"path": str(text_data(
        r, train=[[t, i % 2] for i, (t, _) in enumerate(make_sentences(12, 0))] + [["odd", "nan"]],
        test=[["good", 1], ["bad", 0]]))}), ("row 12", "missing")),
    Case("test_label_unseen_in_train", lambda r, m: text_recipe(r, m, data={"path": str(text_data(
        r, test=make_sentences(4, 1) + [("so so", "neutral")]))}), ("test split", "neutral", "train")),
    Case("single_class", text_rows([[t, "positive"] for t, _ in make_sentences(10, 0)]), ("single class", "positive")),
    Case("empty_test_split", lambda r, m: text_recipe(r, m, data={"path": str(text_data(r, test=[]))}), ("test split is empty",)),
    Case("wrong_text_column", lambda r, m: text_recipe(r, m, data={"path": str(text_data(r)), "text_column": "body"}),
         ("'data.text_column' = 'body'", "Columns: text, label")),
    Case("no_label_column", lambda r, m: text_recipe(r, m, data={"path": str(text_data(r, header=("text", "y")))}),
         ("label column", "Columns: text, y", "data.label_column")),
    Case("number_column_as_text", lambda r, m: text_recipe(r, m, data={"path": str(text_data(
        r, train=[[i, lab] for i, (_, lab) in enumerate(make_sentences(12, 0))], test=[[1, "positive"]]))}),
         ("'text'", "not text")),
    Case("data_path_missing", lambda r, m: text_recipe(r, m, data={"path": str(r / "nowhere")}), ("nowhere", "does not exist")),
    Case("unknown_train_split", lambda r, m: text_recipe(r, m, data={"path": str(text_data(r)), "train_split": "trian"}),
         ("'trian' is not a split", "train, test")),
    Case("every_row_bad_with_skip", lambda r, m: text_recipe(r, m, data={"path": str(text_data(
        r, train=[["  ", "positive"], ["", "negative"]])), "on_bad_example": "skip"}), ("Every row", "train split")),
    Case("one_example_per_class", text_rows([["good", "positive"], ["bad", "negative"]]), ("validation", "single example")),
    # --- models
    Case("model_path_missing", model_folder("missing"), ("no_such_model", "does not exist")),
    Case("model_folder_without_config", model_folder("empty"), ("no config.json",)),
    Case("model_config_not_json", model_folder("bad_json"), ("config.json cannot be read",)),
    Case("text_model_for_images", model_folder("bert_for_images"), ("'bert' model", "not a timm image backbone")),
    Case("image_model_for_text", model_folder("timm_for_text"), ("timm_wrapper", "not a text encoder")),
    Case("model_weights_only_pickled", model_folder("pickle_only"), ("pytorch_model.bin", "pickled weights",
                                                                      "safetensors only", "convert it once")),
    # --- output folder
    Case("foreign_output_folder", with_output(foreign_folder), ("not empty", "not made by hf-transfer")),
    Case("other_runs_unfinished_folder", with_output(other_unfinished_run), ("unfinished run of another recipe", "data.path", "output.overwrite")),
    Case("output_dir_is_a_file", with_output(lambda out: out.write_text("x")), ("is a file",)),
]


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_timm_dir) -> Models:
    return Models(bert=tiny_bert_dir, timm=tiny_timm_dir)


def snapshot(folder: Path) -> dict[str, bytes]:
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"dir"
            for p in sorted(folder.rglob("*"))} if folder.exists() else {}


def test_corpus_is_large_and_unique():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


def one_error(capsys, code: int, *words: str, before_training: bool = False) -> str:
    """The single ``error:`` line, after checking the exit code, the key words and that no traceback shows
    (``before_training``: and that training never started)."""
    captured = capsys.readouterr()
    assert not before_training or "***** Running training *****" not in captured.err, captured.err
    assert code == EXIT_USER_ERROR, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    for word in words:
        assert word in errors[0], f"{word!r} not in: {errors[0]}"
    assert "Traceback" not in captured.err
    return errors[0]


def run_case(command: str, case: Case, models: Models, tmp_path: Path, capsys) -> str:
    """Run ``hf-transfer <command>`` on the case's recipe and assert the contract: exit 2, one ``error:`` line
    with the case's words, no traceback, nothing trained, the output folder as it was. Returns the line."""
    recipe = case.build(tmp_path, models)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "out"
    before = snapshot(out)
    code = run_cli([command, str(path), *[arg for s in case.sets for arg in ("--set", s)]])
    captured = capsys.readouterr()
    assert code == EXIT_USER_ERROR, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    for word in case.words:
        assert word in errors[0], f"{word!r} not in: {errors[0]}"
    assert "Traceback" not in captured.err and "Results on the" not in captured.out and "OK:" not in captured.out
    assert "***** Running training *****" not in captured.err
    assert snapshot(out) == before, "the output folder changed"
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_error(case: Case, models, tmp_path, capsys):
    run_case("finetune", case, models, tmp_path, capsys)


def test_bad_image_after_the_preflight_sample_is_named(models, tmp_path, capsys, monkeypatch):
    """Error mode decodes only a sample before training; a later bad file stops training with its name."""
    monkeypatch.setattr("hf_transfer.data.validation.SAMPLE_IMAGES", 1)
    recipe = image_recipe(tmp_path, models, {"red/zz_late.png": TINY_TRUNCATED})
    recipe["training"]["dataloader_num_workers"] = 1  # the error crosses a worker process, torch re-raises it
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["finetune", str(path)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1 and "zz_late.png" in errors[0] and "bad image" in errors[0], err
    assert "Traceback" not in err and "worker" not in errors[0]
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("modality", ["text", "image"])
def test_skip_drops_bad_rows_and_records_them(modality, models, tmp_path, capsys):
    if modality == "text":
        rows = good_rows() + [["", "positive"], ["fine film", ""], ["  ", "negative"]]
        recipe = text_recipe(tmp_path, models, data={"path": str(text_data(tmp_path, train=rows))})
        expected = [("train", 18), ("train", 19), ("train", 20)]
    else:
        recipe = image_recipe(tmp_path, models, {"red/cut.png": TINY_TRUNCATED, "green/fake.png": b"text"})
        expected = [("train", 0), ("train", 5)]  # imagefolder rows are sorted: green/fake.png, ..., red/cut.png
    recipe["data"]["on_bad_example"] = "skip"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["finetune", str(path)]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    skipped = metrics["skipped"]
    assert skipped["count"] == len(expected) and skipped["by_split"] == {"train": len(expected)}
    assert [(row["split"], row["index"]) for row in skipped["rows"]] == expected
    if modality == "image":
        assert "fake.png" in skipped["rows"][0]["reason"] and "cut.png" in skipped["rows"][1]["reason"]


def test_subprocess_exit_code_2_and_no_traceback(models, tmp_path):
    """Two real processes, run side by side: a data error and a model error."""
    recipes = {"data": image_recipe(tmp_path / "a", models, {"red/cut.png": TINY_TRUNCATED}),
               "model": model_folder("timm_for_text")(tmp_path / "b", models)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_TOKEN", None)
    processes = {}
    for name, recipe in recipes.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        processes[name] = subprocess.Popen([sys.executable, "-m", "hf_transfer.cli", "finetune", str(path)], cwd=REPO,
                                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == EXIT_USER_ERROR, stderr
        assert "Traceback" not in stderr
        assert [line for line in stderr.splitlines() if line.startswith("error: ")], stderr
    assert not (tmp_path / "a" / "out").exists() and not (tmp_path / "b" / "out").exists()
