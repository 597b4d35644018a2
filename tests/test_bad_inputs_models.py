"""Bad model folders, teachers and DANN targets: one ``error:`` line naming the field, before anything trains.

Weight files are damaged the ways a copy or a download goes wrong (empty, cut short, a header length that
lies, tensor offsets past the end); a backbone tensor of another shape must not be silently re-initialised;
the ``method`` section is checked by ``hf-transfer check`` and by the run's pre-flight alike.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import pytest
import yaml
from safetensors.torch import load_file, save_file

from conftest import make_sentences
from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from test_bad_inputs import Case, Models, image_recipe, run_case, snapshot, text_data, text_recipe, write_csv

BERT_TENSOR = "bert.encoder.layer.0.intermediate.dense.weight"
"""A backbone tensor of the tiny BERT: [37, 32] in its config."""


def model_copy(source: Path, root: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(source, root / name))


def rewrite_header(path: Path, edit: Callable[[dict], None]) -> None:
    """Replace the JSON header of a safetensors file, keeping its data bytes."""
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def lying_header(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 10 ** 12) + path.read_bytes()[8:])


def offset_past_end(path: Path) -> None:
    def edit(header: dict) -> None:
        name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
        begin, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = [begin, end + 10 ** 6]
    rewrite_header(path, edit)


def reshaped(key: str, rows: int) -> Callable[[Path], None]:
    """Keep only the first ``rows`` rows of one tensor: the file no longer fits config.json."""
    def damage(path: Path) -> None:
        state = load_file(path)
        name = key if key in state else f"timm_model.{key}"  # timm keys, saved with or without the wrapper's prefix
        state[name] = state[name][:rows].clone()
        save_file(state, path, metadata={"format": "pt"})
    return damage


def dropped(key: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        state = load_file(path)
        del state[key]
        save_file(state, path, metadata={"format": "pt"})
    return damage


def bad_backbone(damage: Callable[[Path], None], modality: str = "text") -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        if modality == "image":
            recipe = image_recipe(root, models, {})
            folder = model_copy(models.timm, root)
        else:
            recipe = text_recipe(root, models)
            folder = model_copy(models.bert, root)
        damage(folder / "model.safetensors")
        recipe["model"]["name_or_path"] = str(folder)
        return recipe
    return build


def sharded_backbone(damage: str) -> Callable[[Path, Models], dict]:
    """The tiny BERT saved in shards; then one shard is cut short or removed."""
    def build(root: Path, models: Models) -> dict:
        from transformers import AutoModelForSequenceClassification

        folder = model_copy(models.bert, root)
        (folder / "model.safetensors").unlink()
        AutoModelForSequenceClassification.from_pretrained(models.bert).save_pretrained(folder, max_shard_size="20KB")
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        shard = folder / sorted(set(index["weight_map"].values()))[-1]
        if damage == "missing":
            shard.unlink()
        else:
            truncated(shard)
        return text_recipe(root, models, model={"name_or_path": str(folder)})
    return build


def corrupt_tokenizer(root: Path, models: Models) -> dict:
    folder = model_copy(models.bert, root)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "truncation": nul', encoding="utf-8")
    return text_recipe(root, models, model={"name_or_path": str(folder)})


def teacher(kind: str) -> Callable[[Path, Models], dict]:
    """A text run distilled from a teacher folder that is damaged, pickled, of the other modality or elsewhere."""
    def build(root: Path, models: Models) -> dict:
        folder = root / "teacher"
        if kind == "missing":
            pass
        elif kind == "image_model":
            folder = models.timm
        elif kind == "pickle_only":
            folder.mkdir()
            (folder / "config.json").write_bytes((models.bert / "config.json").read_bytes())
            (folder / "pytorch_model.bin").write_bytes(b"not read: pickles are refused unopened")
        else:
            model_copy(models.bert, root, "teacher")
            if kind == "labels":
                config = json.loads((folder / "config.json").read_text())
                config.update(id2label={"0": "bad", "1": "good"}, label2id={"bad": 0, "good": 1})
                (folder / "config.json").write_text(json.dumps(config))
            elif kind == "no_head":
                dropped("classifier.weight")(folder / "model.safetensors")
            else:
                lying_header(folder / "model.safetensors")
        return text_recipe(root, models, method={"name": "distillation", "teacher": str(folder)})
    return build


def dann_target(kind: str) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        target = root / "target"
        section = {"path": str(root / "no_such_target")}
        if kind == "column":
            write_csv(target / "train.csv", ["body", "label"], make_sentences(12, 3))
            section = {"path": str(target), "text_column": "review"}
        elif kind == "labels":
            write_csv(target / "train.csv", ["text", "label"],
                      [[text, "good" if label == "positive" else "bad"] for text, label in make_sentences(12, 3)])
            section = {"path": str(target)}
        return text_recipe(root, models, method={"name": "dann", "target": section, "hidden_size": 8})
    return build


DAMAGED = ("'model.name_or_path'", "model.safetensors", "damaged or not a safetensors file")
WRONG_SHAPE = ("'model.name_or_path'", "weights do not fit config.json", "only the new classification head")

CASES = [
    # --- backbone weights
    Case("weights_zero_bytes", bad_backbone(empty), (*DAMAGED, "header too small")),
    Case("weights_truncated", bad_backbone(truncated), DAMAGED),
    Case("weights_header_length_lies", bad_backbone(lying_header), (*DAMAGED, "header too large")),
    Case("weights_offset_past_end", bad_backbone(offset_past_end), (*DAMAGED, "offset")),
    Case("image_weights_truncated", bad_backbone(truncated, "image"), DAMAGED),
    Case("shard_truncated", sharded_backbone("truncated"), ("'model.name_or_path'", "model-0000", "damaged")),
    Case("shard_missing", sharded_backbone("missing"), ("model.safetensors.index.json", "model-0000", "missing")),
    # --- backbone tensors that do not fit the config: never silently re-initialised
    Case("backbone_tensor_other_shape", bad_backbone(reshaped(BERT_TENSOR, 36)),
         (*WRONG_SHAPE, BERT_TENSOR, "[36, 32] vs [37, 32]")),
    Case("backbone_tensor_missing", bad_backbone(dropped("bert.encoder.layer.1.output.dense.bias")),
         (*WRONG_SHAPE, "1 tensor(s) missing", "bert.encoder.layer.1.output.dense.bias")),
    Case("image_backbone_tensor_other_shape", bad_backbone(reshaped("conv_stem.weight", 4), "image"),
         (*WRONG_SHAPE, "timm_model.conv_stem.weight")),
    # --- tokenizer
    Case("tokenizer_json_corrupt", corrupt_tokenizer, ("'model.name_or_path'", "tokenizer.json", "not valid JSON")),
    # --- distillation teacher
    Case("teacher_missing", teacher("missing"), ("'method.teacher'", "does not exist")),
    Case("teacher_weights_damaged", teacher("damaged"), ("'method.teacher'", "model.safetensors", "header too large")),
    Case("teacher_only_pickled", teacher("pickle_only"), ("'method.teacher'", "pytorch_model.bin", "pickled")),
    Case("teacher_of_other_modality", teacher("image_model"), ("'method.teacher'", "not a text encoder")),
    Case("teacher_without_head", teacher("no_head"),
         ("'method.teacher'", "classifier.weight", "no weight of a trained")),
    Case("teacher_other_labels", teacher("labels"), ("'method.teacher'", "predicts labels ['bad', 'good']")),
    # --- DANN target data
    Case("dann_target_path_missing", dann_target("missing"),
         ("'method.target.path'", "no_such_target", "does not exist")),
    Case("dann_target_column_misspelt", dann_target("column"), ("'method.target.text_column' = 'review'", "body")),
    Case("dann_target_other_labels", dann_target("labels"), ("'method.target'", "has labels ['bad', 'good']")),
]

#: What ``hf-transfer check`` must catch too: the backbone's weights and the whole ``method`` section.
CHECK_CASES = [case for case in CASES if case.id in {
    "weights_header_length_lies", "backbone_tensor_other_shape", "tokenizer_json_corrupt", "teacher_missing",
    "teacher_weights_damaged", "teacher_only_pickled", "teacher_of_other_modality", "teacher_other_labels",
    "dann_target_path_missing", "dann_target_column_misspelt", "dann_target_other_labels"}]


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_timm_dir) -> Models:
    return Models(bert=tiny_bert_dir, timm=tiny_timm_dir)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_error(case: Case, models, tmp_path, capsys):
    run_case("finetune", case, models, tmp_path, capsys)


@pytest.mark.parametrize("case", CHECK_CASES, ids=[case.id for case in CHECK_CASES])
def test_check_reports_it_too(case: Case, models, tmp_path, capsys):
    run_case("check", case, models, tmp_path, capsys)


METHOD_CASES = [case for case in CASES if case.id in {"teacher_weights_damaged", "teacher_other_labels",
                                                     "dann_target_path_missing", "dann_target_other_labels"}]


@pytest.mark.parametrize("case", METHOD_CASES, ids=[case.id for case in METHOD_CASES])
def test_the_run_checks_the_method_before_building_the_model(case: Case, models, tmp_path, capsys, monkeypatch):
    """``run_single`` calls ``method_preflight`` with the data's pre-flight, before any model is built."""
    def too_late(*args, **kwargs):
        raise AssertionError("the model was built before the method section was checked")

    monkeypatch.setattr("hf_transfer.training.run.build_trainer", too_late)
    run_case("finetune", case, models, tmp_path, capsys)


def test_check_summarises_the_method(models, tmp_path, capsys):
    """A sound teacher passes ``check``, and the report says what the method will load."""
    folder = model_copy(models.bert, tmp_path, "teacher")
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    (folder / "config.json").write_text(json.dumps(config))
    recipe = text_recipe(tmp_path, models, method={"name": "distillation", "teacher": str(folder)})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["check", str(path)]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.rsplit("\nOK:", 1)[0])
    assert report["method"] == {"name": "distillation", "teacher": {
        "source": "local", "location": str(folder), "labels": ["negative", "positive"]}}


def run_folder(root: Path, models: Models) -> Path:
    """What ``hf-transfer evaluate`` reads: a model folder with the recipe that trained it."""
    folder = model_copy(models.bert, root, "run")
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "recipe.yaml").write_text(yaml.safe_dump(text_recipe(root, models)), encoding="utf-8")
    return folder


@pytest.mark.parametrize("damage", [empty, truncated, lying_header, offset_past_end, reshaped(BERT_TENSOR, 36)],
                         ids=["empty", "truncated", "lying_header", "offset_past_end", "other_shape"])
def test_evaluate_names_the_damaged_weights_before_reading_data(damage, models, tmp_path, capsys, monkeypatch):
    folder = run_folder(tmp_path, models)
    damage(folder / "model.safetensors")
    data = text_data(tmp_path / "eval")

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the model folder was checked")

    monkeypatch.setattr("hf_transfer.evaluation.evaluate.load_raw", no_data)
    before = snapshot(folder)
    assert run_cli(["evaluate", str(folder), "--data", str(data)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "'model_dir'" in errors[0] and "Traceback" not in err, err
    assert "model.safetensors" in errors[0] or "weights do not fit config.json" in errors[0], errors[0]
    assert snapshot(folder) == before
