"""More things users get wrong, in recipe files, CSV data, columns and augmentation values.

Each case writes its recipe file itself (some are not valid UTF-8 or YAML) and runs the real CLI; like
``test_bad_inputs.py`` it must end with exit code 2, one short ``error:`` line with the key words, no
traceback and the output folder as it was.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from conftest import make_sentences
from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from test_bad_inputs import Models, image_recipe, models, snapshot, text_data, text_recipe  # noqa: F401

MAX_LINE = 1200
"""An error line quoting a user's value stays about this short, whatever the value."""


@dataclass
class FileCase:
    id: str
    write: Callable[[Path, Models], Path]
    """Writes the data and the recipe file under the folder and returns the path given to the CLI."""
    words: tuple[str, ...]
    sets: list[str] = field(default_factory=list)
    command: str = "finetune"


def recipe_text(build: Callable[[Path, Models], dict], extra: str = "", encoding: str = "utf-8"):
    """A recipe dict written as YAML text (plus ``extra`` lines) in ``encoding``."""
    def write(root: Path, models: Models) -> Path:
        path = root / "recipe.yaml"
        path.write_bytes((yaml.safe_dump(build(root, models), allow_unicode=True) + extra).encode(encoding))
        return path
    return write


def edited(build: Callable[[Path, Models], dict], old: str, new: str):
    """A recipe dict written as YAML, with ``old`` replaced by ``new`` in the text (what safe_dump would quote)."""
    def write(root: Path, models: Models) -> Path:
        path = root / "recipe.yaml"
        path.write_text(yaml.safe_dump(build(root, models)).replace(old, new, 1), encoding="utf-8")
        return path
    return write


def text(root: Path, models: Models) -> dict:
    return text_recipe(root, models)


def with_data(**data) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        return text_recipe(root, models, data={"path": str(text_data(root)), **data})
    return build


def with_augmentation(**values) -> Callable[[Path, Models], dict]:
    def build(root: Path, models: Models) -> dict:
        recipe = image_recipe(root, models, {})
        recipe["data"]["augmentation"] = values
        return recipe
    return build


def recipe_folder(root: Path, models: Models) -> Path:
    folder = root / "recipes"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(yaml.safe_dump(text(root, models)), encoding="utf-8")
    return folder


def laughs(levels: int = 9) -> str:
    """A "billion laughs" list for ``output.tags``: each item lists the one before 9 times (9**levels strings)."""
    items = ["&l0 [" + ", ".join(['"lol"'] * 9) + "]"]
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def alias_bomb_in_tags(root: Path, models: Models) -> Path:
    recipe = text(root, models)
    recipe["output"]["tags"] = "BOMB"
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe).replace("tags: BOMB", f"tags: {laughs()}"), encoding="utf-8")
    return path


def huge_recipe(root: Path, models: Models) -> Path:
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(text(root, models)) + "# padding\n" * 120_000, encoding="utf-8")
    return path


CSV_TEXT = "text,label\n" + "".join(f"good film {i},positive\nbad film {i},negative\n" for i in range(6))
"""13 lines: a header and 12 rows."""


def csv_file(content: bytes) -> Callable[[Path, Models], Path]:
    """A text recipe whose train.csv holds ``content`` (test.csv is fine)."""
    def write(root: Path, models: Models) -> Path:
        data = root / "data"
        data.mkdir()
        (data / "train.csv").write_bytes(content)
        (data / "test.csv").write_text(CSV_TEXT, encoding="utf-8")
        return recipe_text(lambda r, m: text_recipe(r, m, data={"path": str(data)}))(root, models)
    return write


CASES = [
    # --- the recipe file itself
    FileCase("recipe_latin1", recipe_text(text, "# caf\u00e9 au lait\n", "latin-1"),
             ("recipe.yaml", "not UTF-8", "0xe9", "save it as UTF-8")),
    FileCase("recipe_utf16", recipe_text(text, encoding="utf-16"), ("recipe.yaml", "UTF-16", "save it as UTF-8")),
    FileCase("recipe_is_a_folder", recipe_folder, ("recipes", "is a folder", ".yaml file")),
    FileCase("duplicate_section", recipe_text(text, "training: {learning_rate: 0.1}\n"),
             ("'training' appears twice", "lines", "merge them")),
    FileCase("duplicate_nested_key", recipe_text(text, "evaluation:\n  cross_validate: 2\n  cross_validate: 3\n"),
             ("'cross_validate' appears twice", "on lines")),
    FileCase("alias_bomb_in_tags", alias_bomb_in_tags, ("recipe.yaml", "aliases", "100,000", "write the values out")),
    FileCase("alias_bomb_via_set", recipe_text(text), ("Override", "output.tags", "aliases", "100,000"),
             [f"output.tags={laughs()}"]),
    FileCase("recursive_alias_via_set", recipe_text(text), ("Override", "recursive"), ["output.tags=&a [*a]"]),
    FileCase("recipe_file_too_large", huge_recipe, ("recipe.yaml", "MB", "small YAML file")),
    FileCase("yaml_no_is_false", edited(text, "training:", "training:\n  eval_strategy: no"),
             ("'training.eval_strategy' is False", "no/yes/on/off", 'eval_strategy: "no"', "epoch")),
    FileCase("yaml_off_via_set", recipe_text(text), ("'data.on_bad_example' is False", "quote", "error, skip"),
             ["data.on_bad_example=off"]),
    FileCase("long_value_is_cut", recipe_text(with_data(text_column="x" * 5000)),
             ("'data.text_column'", "...", "Columns: text, label")),
    # --- CSV data files (finetune, and check, which crashed on a ragged file)
    FileCase("csv_latin1", csv_file(CSV_TEXT.replace("good film 3", "caf\u00e9 film").encode("latin-1")),
             ("train.csv", "not UTF-8", "line 8", "save it as UTF-8")),
    FileCase("csv_utf16", csv_file(CSV_TEXT.encode("utf-16")), ("train.csv", "UTF-16", "save it as UTF-8")),
    FileCase("csv_ragged_row", csv_file((CSV_TEXT + "fine, really,positive\n").encode()),
             ("train.csv", "3 fields on line 14", "header has 2", "quote")),
    FileCase("csv_ragged_row_check", csv_file((CSV_TEXT + "fine, really,positive\n").encode()),
             ("train.csv", "3 fields on line 14"), command="check"),
    FileCase("csv_unclosed_quote", csv_file((CSV_TEXT + '"never closed,positive\nok film,positive\n').encode()),
             ("train.csv", "quote", "line 14", "never closed")),
    FileCase("csv_header_only", csv_file(b"text,label\n"), ("train.csv", "header but no rows")),
    FileCase("csv_zero_bytes", csv_file(b""), ("train.csv", "is empty", "header row")),
    FileCase("csv_zero_bytes_check", csv_file(b""), ("train.csv", "is empty"), command="check"),
    # --- columns
    FileCase("text_column_is_the_label", recipe_text(with_data(text_column="label")),
             ("'label'", "text and the label column", "'data.text_column'", "own column")),
    FileCase("label_column_is_the_text", recipe_text(with_data(label_column="text")),
             ("'text'", "text and the label column", "'data.label_column'")),
    # --- augmentation values
    FileCase("unknown_auto_augment", recipe_text(with_augmentation(auto_augment="bogus-m9")),
             ("'data.augmentation.auto_augment'", "bogus-m9", "rand-m9-mstd0.5", "augmix", "original")),
    FileCase("negative_color_jitter", recipe_text(with_augmentation(color_jitter=-1)),
             ("'data.augmentation.color_jitter'", "-1", "0.4")),
]


def test_corpus_ids_are_unique():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_error(case: FileCase, models, tmp_path, capsys):
    path = case.write(tmp_path, models)
    out = tmp_path / "out"
    before = snapshot(out)
    code = run_cli([case.command, str(path), *[arg for s in case.sets for arg in ("--set", s)]])
    captured = capsys.readouterr()
    assert code == EXIT_USER_ERROR, captured.err[-3000:]
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err[-3000:]
    assert len(errors[0]) < MAX_LINE, errors[0][:MAX_LINE]
    for word in case.words:
        assert word in errors[0], f"{word!r} not in: {errors[0]}"
    assert "Traceback" not in captured.err and "Results on the" not in captured.out
    assert snapshot(out) == before, "the output folder changed"


def _struct_parquet(path: Path, per_class: dict[str, int], seed: int) -> None:
    """Images as ``{bytes, path}`` structs without the ``Image`` feature: what pandas writes from datasets rows."""
    import pandas as pd
    from PIL import Image

    from conftest import IMAGE_CLASSES

    rng = np.random.default_rng(seed)
    rows = []
    for name, count in per_class.items():
        for i in range(count):
            pixels = np.clip(np.array(IMAGE_CLASSES[name]) + rng.integers(-30, 31, (8, 8, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "PNG")
            rows.append({"image": {"bytes": buffer.getvalue(), "path": f"{name}_{i}.png"}, "label": name})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def test_parquet_image_structs_train(models, tmp_path, capsys):
    """Such a column used to be refused as "not images"; it is the same storage as an Image column."""
    data = tmp_path / "parquet"
    _struct_parquet(data / "train.parquet", {"red": 6, "green": 6}, seed=0)
    _struct_parquet(data / "test.parquet", {"red": 2, "green": 2}, seed=1)
    recipe = image_recipe(tmp_path, models, {})
    recipe["data"]["path"] = str(data)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["check", str(path)]) == 0, capsys.readouterr().err[-3000:]
    assert run_cli(["finetune", str(path)]) == 0, capsys.readouterr().err[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0 and (tmp_path / "out" / "model.safetensors").exists()


def test_small_classes_change_the_validation_fraction_with_a_note(models, tmp_path, capsys, caplog):
    """2 rows per class: validation takes 1 of each (50 %), not the requested 10 %; check says so."""
    rows = [["good film", "positive"], ["great fun", "positive"], ["bad film", "negative"], ["awful plot", "negative"]]
    recipe = text_recipe(tmp_path, models, data={"path": str(text_data(tmp_path, train=rows))})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["check", str(path)]) == 0, capsys.readouterr().err[-3000:]
    stdout = capsys.readouterr().out
    report = json.loads(stdout[: stdout.rindex("\nOK:")])
    assert len(report["notes"]) == 1
    note = report["notes"][0]
    assert "validation split is 2 of 4" in note and "50%" in note and "10%" in note
    assert any("validation split is 2 of 4" in record.getMessage() for record in caplog.records)


def test_requested_fraction_kept_means_no_note(models, tmp_path, capsys):
    recipe = text_recipe(tmp_path, models, data={"path": str(text_data(tmp_path, train=make_sentences(40, 0)))})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert run_cli(["check", str(path)]) == 0, capsys.readouterr().err[-3000:]
    stdout = capsys.readouterr().out
    assert json.loads(stdout[: stdout.rindex("\nOK:")])["notes"] == []


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """``<<: *base`` then a key of the base is an override, not a duplicate."""
    from hf_transfer.recipe import Recipe

    path = tmp_path / "merge.yaml"
    path.write_text("task: image-classification\nmodel: {name_or_path: resnet18}\ndata: {path: 'sklearn:digits'}\n"
                    "training:\n  <<: &base {num_train_epochs: 1, learning_rate: 0.01}\n  learning_rate: 0.001\n",
                    encoding="utf-8")
    assert Recipe.from_yaml(path).training == {"num_train_epochs": 1, "learning_rate": 0.001}


def test_training_decodes_raw_image_bytes():
    """A binary column cast to images reaches the training transform as bytes or ``{bytes, path}`` structs."""
    from PIL import Image

    from hf_transfer.tasks.image import ImageBatchTransform

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, "PNG")
    decode = ImageBatchTransform(lambda image: image, "image").decode
    for value in (buffer.getvalue(), {"bytes": buffer.getvalue(), "path": "gone.png"}):
        assert decode(value).getpixel((0, 0)) == (200, 10, 10)


def test_error_line_is_one_line_and_keeps_both_ends():
    """A library message quoting a whole file becomes one line that still says what to do."""
    from hf_transfer.errors import DataError, user_message

    text = user_message(DataError("The file 'a.csv' is bad:\n" + "x" * 50_000 + "\nSave it as UTF-8."))
    assert "\n" not in text and len(text) < MAX_LINE
    assert text.startswith("The file 'a.csv' is bad:") and text.endswith("Save it as UTF-8.")
