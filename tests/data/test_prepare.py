"""prepare_data: columns, one label set across splits, carved validation, subsampling, builtins."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image, Value

from hf_transfer.data.prepare import LABEL, column_values, prepare_data
from hf_transfer.data.sources import load_raw
from hf_transfer.errors import DataError
from hf_transfer.recipe import DataSection

TEXT = ("text", "text_pair")


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labelled_rows(labels: list[str], seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    return [(" ".join(rng.choice(words, 3)), label) for label in labels]


def label_counts(split) -> Counter:
    return Counter(list(split[LABEL]))


def test_text_csv_folder_defaults(text_csv_data):
    data = prepare_data(DataSection(path=str(text_csv_data)), TEXT, seed=0)
    assert data.columns == {"text": "text", "label": "label"}
    assert data.label_names == ["negative", "positive"]
    assert data.sizes() == {"train": 36, "validation": 4, "test": 12}
    assert data.train.column_names == ["text", LABEL]
    assert isinstance(data.train.features[LABEL], ClassLabel)
    assert data.train.features[LABEL].names == ["negative", "positive"]
    assert data.sources["test"] == "split 'test'"


def test_labels_are_encoded_consistently(text_csv_data):
    data = prepare_data(DataSection(path=str(text_csv_data)), TEXT, seed=0)
    raw = load_raw(DataSection(path=str(text_csv_data)))["test"]
    names = data.label_names
    assert [names[i] for i in data.test[LABEL]] == list(raw["label"])


def test_column_auto_detection_sentence_and_fine_label(tmp_path):
    rows = labelled_rows(["a", "b"] * 10)
    write_csv(tmp_path / "train.csv", ["id", "sentence", "fine_label"], [(i, *r) for i, r in enumerate(rows)])
    data = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert data.columns == {"text": "sentence", "label": "fine_label"}
    assert data.train.column_names == ["sentence", LABEL]


def test_text_pair_column_detected(tmp_path):
    rows = [("a premise", "a hypothesis", label) for label in ["yes", "no"] * 10]
    write_csv(tmp_path / "train.csv", ["sentence1", "sentence2", "label"], rows)
    data = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert data.columns == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}


def write_image_parquet(folder: Path, names: list[str], labels: list[int], column: str = "img") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = [np.full((8, 8, 3), 40 * label, dtype=np.uint8) for label in labels]
    features = Features({column: Image(), "fine_label": ClassLabel(names=names), "extra": Value("string")})
    Dataset.from_dict({column: images, "fine_label": labels, "extra": ["x"] * len(labels)},
                      features=features).to_parquet(str(folder / "train.parquet"))
    return folder


def test_image_column_img_and_classlabel_names_kept_in_their_order(tmp_path):
    names = ["zebra", "apple", "mango"]
    folder = write_image_parquet(tmp_path / "imgs", names, [0, 1, 2] * 6)
    data = prepare_data(DataSection(path=str(folder)), ("image",), seed=0)
    assert data.columns == {"image": "img", "label": "fine_label"}
    assert data.label_names == names  # not re-sorted
    assert data.train.features[LABEL].names == names
    assert data.train.column_names == ["img", LABEL]
    assert data.test is None


def test_imagefolder_labels_from_folder_names(image_folder_data):
    data = prepare_data(DataSection(path=str(image_folder_data)), ("image",), seed=0)
    assert data.columns == {"image": "image", "label": "label"}
    assert sorted(data.label_names) == ["blue", "green", "red"]
    assert data.sizes() == {"train": 36, "validation": 3, "test": 12}
    assert label_counts(data.validation) == {0: 1, 1: 1, 2: 1}
    assert data.train[0]["image"].size == (24, 24)


def test_explicit_wrong_column_lists_columns(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a", "b"] * 5))
    with pytest.raises(DataError, match=r"'data\.label_column' = 'lbl' is not a column.*Columns: text, label"):
        prepare_data(DataSection(path=str(tmp_path), label_column="lbl"), TEXT, seed=0)


def test_undetectable_column_lists_columns(tmp_path):
    write_csv(tmp_path / "train.csv", ["body", "label"], labelled_rows(["a", "b"] * 5))
    with pytest.raises(DataError, match=r"Could not find the text column.*Columns: body, label.*data\.text_column"):
        prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)


def test_explicit_columns_are_used(tmp_path):
    write_csv(tmp_path / "train.csv", ["body", "verdict"], labelled_rows(["a", "b"] * 5))
    data = prepare_data(DataSection(path=str(tmp_path), text_column="body", label_column="verdict"), TEXT, seed=0)
    assert data.columns == {"text": "body", "label": "verdict"}


def test_string_labels_are_sorted_into_names(tmp_path):
    labels = ["zeta", "alpha", "mid"] * 10
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(labels))
    data = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert data.label_names == ["alpha", "mid", "zeta"]
    assert label_counts(data.train) + label_counts(data.validation) == {0: 10, 1: 10, 2: 10}


def test_integer_labels_sorted_numerically(tmp_path):
    labels = [str(v) for v in [10, 2, 1] * 6]
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(labels))
    data = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert data.label_names == ["1", "2", "10"]


def test_label_in_test_absent_from_train_is_named(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a", "b"] * 5))
    write_csv(tmp_path / "test.csv", ["text", "label"], labelled_rows(["a", "b", "c", "d"]))
    with pytest.raises(DataError, match=r"The test split has labels that train does not: c, d"):
        prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)


def test_single_class_is_rejected(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["only"] * 6))
    with pytest.raises(DataError, match=r"single class \(only\)"):
        prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)


def test_validation_carved_stratified_when_absent(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a"] * 60 + ["b"] * 40))
    data = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert len(data.validation) == 10 and len(data.train) == 90
    assert label_counts(data.validation) == {0: 6, 1: 4}
    assert "10% of train" in data.sources["validation"]
    again = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert list(again.validation["text"]) == list(data.validation["text"])


def test_validation_fraction_and_test_fraction(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a", "b"] * 50))
    data = prepare_data(DataSection(path=str(tmp_path), validation_fraction=0.2, test_fraction=0.1), TEXT, seed=0)
    assert data.sizes() == {"train": 72, "validation": 18, "test": 10}
    assert label_counts(data.test) == {0: 5, 1: 5}


def test_existing_validation_split_is_used(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a", "b"] * 10))
    write_csv(tmp_path / "validation.csv", ["text", "label"], labelled_rows(["b", "a", "b"]))
    data = prepare_data(DataSection(path=str(tmp_path)), TEXT, seed=0)
    assert data.sizes() == {"train": 20, "validation": 3}
    assert data.sources["validation"] == "split 'validation'"
    assert list(data.validation[LABEL]) == [1, 0, 1]


def test_unknown_split_name_lists_splits(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a", "b"] * 5))
    with pytest.raises(DataError, match=r"'data\.test_split' = 'dev' is not a split\. Splits: train"):
        prepare_data(DataSection(path=str(tmp_path), test_split="dev"), TEXT, seed=0)


def test_samples_per_class(text_csv_data):
    data = prepare_data(DataSection(path=str(text_csv_data), samples_per_class=3), TEXT, seed=0)
    assert label_counts(data.train) == {0: 3, 1: 3}
    assert len(data.validation) == 4  # validation is carved before the few-shot subset


def test_max_train_samples_is_stratified(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled_rows(["a"] * 75 + ["b"] * 25))
    data = prepare_data(DataSection(path=str(tmp_path), max_train_samples=20, max_eval_samples=4), TEXT, seed=0)
    assert label_counts(data.train) == {0: 15, 1: 5}
    assert len(data.validation) == 4


def test_builtin_sklearn_digits():
    raw = load_raw(DataSection(path="sklearn:digits"))
    assert {name: len(split) for name, split in raw.items()} == {"train": 1437, "test": 360}
    assert raw["train"].features["label"].names == [str(d) for d in range(10)]
    data = prepare_data(DataSection(path="sklearn:digits"), ("image",), seed=0)
    assert data.label_names == [str(d) for d in range(10)]
    assert len(data.train) + len(data.validation) == 1437
    assert len(data.test) == 360
    assert data.train[0]["image"].size == (8, 8)


def test_unknown_builtin_lists_builtins():
    with pytest.raises(DataError, match="Unknown builtin data source 'sklearn:iris'.*sklearn:digits"):
        load_raw(DataSection(path="sklearn:iris"))


def test_single_csv_file_as_path(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", ["review", "category"], labelled_rows(["x", "y"] * 10))
    data = prepare_data(DataSection(path=str(path)), TEXT, seed=0)
    assert data.columns == {"text": "review", "label": "category"}
    assert data.sizes() == {"train": 18, "validation": 2}
    assert data.test is None


def test_single_tsv_file_as_path(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\tlabel\n" + "".join(f"row {i}\t{'ab'[i % 2]}\n" for i in range(10)), encoding="utf-8")
    data = prepare_data(DataSection(path=str(path)), TEXT, seed=0)
    assert data.label_names == ["a", "b"]


def test_missing_local_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_raw(DataSection(path=str(tmp_path / "nowhere")))


def test_unsupported_single_file_type(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        load_raw(DataSection(path=str(path)))


def in_memory(monkeypatch, splits: dict[str, tuple[list[str], list[int]]]) -> None:
    """Serve ``{split: (label names, label ids)}`` as the raw data, each split with its own ClassLabel."""
    from datasets import DatasetDict

    def fake_load_raw(section):
        return DatasetDict({
            name: Dataset.from_dict({"text": [f"{name} {i}" for i in range(len(ids))], "label": ids},
                                    features=Features({"text": Value("string"), "label": ClassLabel(names=names)}))
            for name, (names, ids) in splits.items()})

    monkeypatch.setattr("hf_transfer.data.prepare.load_raw", fake_load_raw)


@pytest.mark.parametrize(("test_names", "expected"), [
    (["c", "b", "a"], [2, 1, 2, 1]),  # same classes, other order
    (["c", "a"], [2, 0, 2, 0]),  # fewer classes than train (e.g. a small test set)
])
def test_classlabel_splits_with_other_name_order_are_aligned(monkeypatch, test_names, expected):
    in_memory(monkeypatch, {"train": (["a", "b", "c"], [0, 1, 2] * 4), "test": (test_names, [0, 1, 0, 1])})
    data = prepare_data(DataSection(path="fake"), TEXT, seed=0)
    assert data.test.features[LABEL].names == ["a", "b", "c"]
    assert list(data.test[LABEL]) == expected


def test_classlabel_test_split_with_unknown_name(monkeypatch):
    in_memory(monkeypatch, {"train": (["a", "b"], [0, 1] * 4), "test": (["a", "b", "d"], [0, 2])})
    with pytest.raises(DataError, match="test split has labels that train does not: d"):
        prepare_data(DataSection(path="fake"), TEXT, seed=0)


def test_hidden_label_test_split_is_replaced_by_validation(monkeypatch):
    in_memory(monkeypatch, {"train": (["a", "b"], [0, 1] * 10), "validation": (["a", "b"], [1, 0, 1]),
                            "test": (["a", "b"], [-1, -1])})
    data = prepare_data(DataSection(path="fake"), TEXT, seed=0)
    assert data.sizes() == {"train": 18, "validation": 2, "test": 3}
    assert data.sources["test"] == "split 'validation'"
    assert list(data.test[LABEL]) == [1, 0, 1]


def test_explicit_hidden_label_test_split_is_an_error(monkeypatch):
    in_memory(monkeypatch, {"train": (["a", "b"], [0, 1] * 10), "test": (["a", "b"], [-1, -1])})
    with pytest.raises(DataError, match="unlabelled rows"):
        prepare_data(DataSection(path="fake", test_split="test"), TEXT, seed=0)


def test_column_values_reads_selected_rows_in_their_order_ignoring_a_transform():
    split = Dataset.from_dict({"labels": list(range(10)), "text": [f"t{i}" for i in range(10)]})
    picked = split.select([7, 2, 2, 9]).with_transform(lambda batch: {"labels": [-1] * len(batch["labels"])})
    assert column_values(picked, "labels") == [7, 2, 2, 9]
    assert column_values(split.select([]), "text") == []
