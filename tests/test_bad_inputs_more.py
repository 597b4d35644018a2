"""More bad input through the real CLI: labels that are not one class per row, labels typed two ways, argparse's
own mistakes, and output paths that already hold the user's files (``evaluate --output``, ``rank --output``).

Same contract as ``test_bad_inputs.py``: exit code 2, one ``error:`` line naming the field or flag with a way to
fix it, no traceback, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import yaml
from datasets import ClassLabel, Dataset

from conftest import make_sentences
from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from hf_transfer.data.prepare import encode_labels
from hf_transfer.errors import DataError
from hf_transfer.training.outputs import OWNER_FILE, read_owner
from test_bad_inputs import Case, Models, one_error, run_case, snapshot, text_recipe, write_csv


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_timm_dir) -> Models:
    return Models(bert=tiny_bert_dir, timm=tiny_timm_dir)


# --- 1. a label column that is not one class per row


def jsonl_labels(make_label: Callable[[int], object]) -> Callable[[Path, Models], dict]:
    """train.jsonl / test.jsonl whose ``label`` values are ``make_label(class index)``."""
    def build(root: Path, models: Models) -> dict:
        data = root / "data"
        data.mkdir(parents=True, exist_ok=True)
        for split, count in (("train", 20), ("test", 6)):
            rows = [{"text": text, "label": make_label(int(label == "positive"))}
                    for text, label in make_sentences(count, 0)]
            (data / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        return text_recipe(root, models, data={"path": str(data)})
    return build


LABEL_CASES = [
    Case("label_lists", jsonl_labels(lambda c: [c]), ("'label'", "lists", "one class name or integer")),
    Case("label_multi_lists", jsonl_labels(lambda c: [c, 1 - c]), ("'label'", "lists", "multi-label")),
    Case("label_dicts", jsonl_labels(lambda c: {"id": c}), ("'label'", "dicts", "one class name or integer")),
    Case("label_fractional_floats", jsonl_labels(lambda c: c + 0.5),
         ("'label'", "class names or integers", "Regression targets")),
]


@pytest.mark.parametrize("command", ["finetune", "check"])
@pytest.mark.parametrize("case", LABEL_CASES, ids=[case.id for case in LABEL_CASES])
def test_label_that_is_not_one_class_is_one_error(command, case, models, tmp_path, capsys):
    run_case(command, case, models, tmp_path, capsys)


def test_evaluating_list_labels_is_one_data_error():
    """``evaluate`` encodes labels without the row checks: the same message, not an Arrow error."""
    split = Dataset.from_dict({"text": ["a", "b"], "label": [[0], [1]]})
    with pytest.raises(DataError, match="labels in column 'label' are lists"):
        encode_labels(split, "test", "label", ["0", "1"])
    assert "labels" in encode_labels(Dataset.from_dict({"label": [0, 1]}).cast_column(
        "label", ClassLabel(names=["0", "1"])), "test", "label", ["0", "1"]).column_names


# --- 2. labels typed two ways


def test_labels_differing_by_case_or_spaces_are_kept_but_noted(models, tmp_path, capsys):
    rows = [list(row) for row in make_sentences(12, 0)]
    rows += [["a fine film", "positive "], ["a fine plot", "positive "], ["great", "POSITIVE"], ["superb", "POSITIVE"]]
    data = tmp_path / "data"
    write_csv(data / "train.csv", ["text", "label"], rows)
    write_csv(data / "test.csv", ["text", "label"], rows[:4] + rows[-4:])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(text_recipe(tmp_path, models, data={"path": str(data)})), encoding="utf-8")
    assert run_cli(["check", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("\nOK:")])
    assert sorted(report["labels"]) == ["POSITIVE", "negative", "positive", "positive "]  # the classes stay
    notes = [note for note in report["notes"] if "differ only by case or surrounding spaces" in note]
    assert len(notes) == 1, report["notes"]
    assert "'positive'" in notes[0] and "'positive '" in notes[0] and "'POSITIVE'" in notes[0]
    assert "negative" not in notes[0]


# --- 3. argparse's own errors


@pytest.mark.parametrize("argv, words", [
    (["rank", "--data", "X", "--candidates", "--output", "Y"],
     ("hf-transfer rank", "--candidates", "expected at least one argument", "hf-transfer rank --help")),
    (["finetune", "recipe.yaml", "--bogus"], ("hf-transfer", "unrecognized arguments: --bogus", "--help")),
    (["evaluate", "model_dir"], ("hf-transfer evaluate", "--data", "required", "hf-transfer evaluate --help")),
    (["evaluate", "m", "--data", "d", "--batch-size", "many"], ("--batch-size", "invalid int value", "many")),
    (["finetun", "recipe.yaml"], ("invalid choice", "finetun", "hf-transfer --help")),
    ([], ("hf-transfer", "required", "command")),
])
def test_argparse_error_is_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(argv)
    assert exit_info.value.code == EXIT_USER_ERROR
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "usage:" not in captured.err and captured.out == ""
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"


# --- 4. evaluate --output: an existing file is the user's


def test_evaluate_refuses_an_existing_output_file_without_overwrite(tmp_path, capsys, monkeypatch):
    output = tmp_path / "report.json"
    output.write_text("my own notes")
    monkeypatch.setattr("hf_transfer.evaluation.evaluate.evaluate_model",
                        lambda *a, **k: pytest.fail("evaluated before checking --output"))
    code = run_cli(["evaluate", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--output", str(output)])
    one_error(capsys, code, "--output", "report.json", "already exists", "--overwrite")
    assert snapshot(tmp_path) == {"report.json": b"my own notes"}

    monkeypatch.setattr("hf_transfer.evaluation.evaluate.evaluate_model", lambda *a, **k: {"accuracy": 0.5})
    assert run_cli(["evaluate", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--output", str(output),
                    "--overwrite"]) == 0
    assert json.loads(output.read_text()) == {"accuracy": 0.5}


# --- 5. rank --output: a folder of the user's


def refuse_rank(output: Path, models: Models, data: Path, capsys, monkeypatch, *words: str) -> None:
    monkeypatch.setattr("hf_transfer.transferability.ranking.rank_candidates",
                        lambda *a, **k: pytest.fail("ranked before checking --output"))
    before = snapshot(output)
    code = run_cli(["rank", "--data", str(data), "--candidates", str(models.timm), "--output", str(output),
                    "--overwrite"])
    one_error(capsys, code, "--output", *words)
    assert snapshot(output) == before


@pytest.mark.parametrize("files, words", [
    ({"ranking.json": '{"mine": true}'}, ("not empty", "not made by hf-transfer", OWNER_FILE)),
    ({"notes.txt": "my thesis"}, ("not empty", "not made by hf-transfer")),
    ({OWNER_FILE: '{"created_by": "hf-transfer", "format": 1, "entries": ["ranking.json"]}', "ranking.json": "{}",
      "notes.txt": "my thesis"}, ("did not write", "notes.txt")),
])
def test_rank_refuses_a_folder_of_the_users(files, words, models, image_folder_data, tmp_path, capsys, monkeypatch):
    output = tmp_path / "ranking"
    output.mkdir()
    for name, text in files.items():
        (output / name).write_text(text)
    refuse_rank(output, models, image_folder_data, capsys, monkeypatch, *words)


def test_rank_claims_an_empty_folder_and_may_replace_its_own_ranking(models, image_folder_data, tmp_path, capsys,
                                                                      monkeypatch):
    output = tmp_path / "ranking"
    output.mkdir()
    arguments = ["rank", "--data", str(image_folder_data), "--candidates", str(models.timm), "--max-samples", "30",
                 "--output", str(output)]
    assert run_cli(arguments) == 0
    assert sorted(read_owner(output).entries) == ["ranking.json", "ranking.md", "ranking.png"]
    assert sorted(p.name for p in output.iterdir()) == [OWNER_FILE, "ranking.json", "ranking.md", "ranking.png"]
    assert run_cli([*arguments, "--overwrite"]) == 0  # its own ranking: replaced
    capsys.readouterr()
    (output / "notes.txt").write_text("mine")
    refuse_rank(output, models, image_folder_data, capsys, monkeypatch, "did not write", "notes.txt")
