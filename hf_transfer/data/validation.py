"""Row-level checks before training: every bad row is named (split, row, file) or, with
``data.on_bad_example: skip``, dropped and recorded for ``metrics.json``.

Text and label checks run over every row with Arrow kernels in batched ``Dataset.map`` calls (fast even
for millions of rows). Decoding images is the expensive part: ``skip`` decodes all of them (it must know
which to drop); ``error`` decodes a sample before training and names any later bad file when it is loaded
(``tasks.image.ImageBatchTransform``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Image, LargeList, List, Value

from ..errors import DataError

SAMPLE_IMAGES = 64
"""Images decoded per split before training when ``on_bad_example`` is ``error``."""
MAX_RECORDED = 10_000
"""Skipped rows listed one by one in ``metrics.json``; beyond this only the count grows."""
SHOWN = 5
"""Bad rows quoted in an error message."""

TEXT_TYPES = (pa.string(), pa.large_string())


@dataclass(frozen=True)
class BadRow:
    """One row that cannot be trained on: where it is and why."""

    split: str
    index: int
    reason: str

    def describe(self) -> str:
        return f"row {self.index} ({self.reason})"


def image_problem(value: dict[str, Any] | None) -> str | None:
    """Why an undecoded ``datasets.Image`` value cannot be used, or None when it decodes."""
    if value is None or (value.get("bytes") is None and value.get("path") is None):
        return "no image"
    where = value.get("path") or "embedded image"
    try:
        Image().decode_example(value)  # opens and fully loads, as training will
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for bad files
        detail = str(error).replace(f" '{where}'", "").strip() or type(error).__name__
        return f"{where}: not a readable image ({detail})"
    return None


def _missing_labels(labels: pa.Array, feature: Any) -> pa.Array:
    missing = pc.is_null(labels)
    if isinstance(feature, ClassLabel):
        return pc.or_kleene(missing, pc.less(labels, 0)).fill_null(True)
    if pa.types.is_floating(labels.type):
        return pc.or_kleene(missing, pc.is_nan(labels)).fill_null(True)
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        return pc.or_kleene(missing, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(labels)), 0)).fill_null(True)
    return missing


def _row_problems(table: pa.Table, indices: list[int], text_columns: list[str], label_column: str,
                  label_feature: Any, image_column: str | None = None) -> dict[str, list]:
    """Batched ``map`` function (Arrow format): returns only the bad rows, as (index, reason, missing input)."""
    reasons: dict[int, tuple[str, bool]] = {}
    missing = _missing_labels(table.column(label_column).combine_chunks(), label_feature)
    for position in pc.indices_nonzero(missing).to_pylist():
        reasons[position] = (f"label in column '{label_column}' is missing", False)
    absent_by_input: list[pa.Array] = []
    if image_column is not None:  # a missing image needs no decoding to be found
        images = table.column(image_column).combine_chunks()
        absent = pc.is_null(images)
        if pa.types.is_struct(images.type):
            fields = {images.type.field(i).name for i in range(images.type.num_fields)}
            if {"bytes", "path"} <= fields:
                absent = pc.or_kleene(absent, pc.and_kleene(pc.is_null(pc.struct_field(images, "bytes")),
                                                            pc.is_null(pc.struct_field(images, "path"))))
        absent_by_input.append(absent.fill_null(True))
    for column in text_columns:
        values = table.column(column).combine_chunks()
        empty = pc.or_kleene(pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0))
        absent_by_input.append(empty.fill_null(True))
    if image_column is not None and text_columns:
        # an image-text row with no input at all is no "missing input" a model can stand in for: a bad row
        nothing = absent_by_input[0]
        for absent in absent_by_input[1:]:
            nothing = pc.and_(nothing, absent)
        columns = ", ".join(f"'{c}'" for c in [image_column, *text_columns])
        for position in pc.indices_nonzero(nothing).to_pylist():
            reasons.setdefault(position, (f"no input at all (columns {columns} all missing or empty)", False))
    names = ["no image"] * (image_column is not None) + [f"column '{c}' is empty or whitespace" for c in text_columns]
    for reason, absent in zip(names, absent_by_input):
        for position in pc.indices_nonzero(absent).to_pylist():
            reasons.setdefault(position, (reason, True))
    ordered = sorted(reasons)
    return {"index": [indices[p] for p in ordered], "reason": [reasons[p][0] for p in ordered],
            "missing": [reasons[p][1] for p in ordered]}


def _image_problems(batch: dict[str, list], indices: list[int], column: str) -> dict[str, list]:
    found = [(i, v, image_problem(v)) for i, v in zip(indices, batch[column])]
    return {"index": [i for i, _, r in found if r], "reason": [r for _, _, r in found if r],
            "missing": [_no_image(v) for _, v, r in found if r]}


def _no_image(value: dict[str, Any] | None) -> bool:
    return value is None or (value.get("bytes") is None and value.get("path") is None)


def _scan(split: Dataset, function, fn_kwargs: dict, arrow: bool) -> list[tuple[int, str, bool]]:
    source = split.with_format("arrow") if arrow else split
    found = source.map(function, batched=True, batch_size=10_000 if arrow else 256, with_indices=True,
                       fn_kwargs=fn_kwargs,
                       remove_columns=split.column_names, keep_in_memory=True,
                       desc=None if arrow else "Checking images")
    if not len(found):
        return []
    found = found.with_format(None)
    return list(zip(found["index"], found["reason"], found["missing"]))


def as_images(split: Dataset, column: str) -> Dataset:
    """An image column stored without its ``Image`` feature (``{bytes, path}`` structs, e.g. a parquet file written
    by pandas from ``datasets`` rows, or raw encoded bytes) becomes an ``Image`` column: same storage, same decoding."""
    feature = split.features[column]
    struct = isinstance(feature, dict) and bool(feature) and set(feature) <= {"bytes", "path"}
    binary = isinstance(feature, Value) and feature.dtype in ("binary", "large_binary")
    return split.cast_column(column, Image()) if struct or binary else split


def check_label_type(feature: Any, split_name: str, column: str) -> None:
    """One class per row: a list (multi-label), struct or image column cannot be a label column, and Arrow
    cannot even list its distinct values; say so before anything reads them."""
    if isinstance(feature, (ClassLabel, Value)):
        return
    kind = "lists" if isinstance(feature, (list, List, LargeList)) else \
        "dicts (structs)" if isinstance(feature, dict) else type(feature).__name__
    described = str(feature) if len(str(feature)) <= 60 else str(feature)[:57] + "..."
    raise DataError(f"The {split_name} split: labels in column '{column}' are {kind} ({described}); a "
                    "label must be one class name or integer per row (multi-label data is not supported). "
                    "Set 'data.label_column' to a column with one class per row, or fix the data.")


def _check_column_types(split: Dataset, split_name: str, columns: dict[str, str]) -> None:
    for role, column in columns.items():
        feature = split.features[column]
        if role == "label":
            check_label_type(feature, split_name, column)
        if role in ("text", "text_pair") and not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"The {split_name} split: '{column}' is the {role} column but holds {feature}, not text. "
                            f"Set 'data.{role}_column' to a text column. Columns: {', '.join(split.column_names)}.")
        if role == "image" and not isinstance(feature, Image):
            raise DataError(f"The {split_name} split: '{column}' is the image column but holds {feature}, not images. "
                            f"Set 'data.image_column'. Columns: {', '.join(split.column_names)}.")


def _integer_labels(split: Dataset, split_name: str, column: str) -> Dataset:
    """CSV columns of integers with gaps load as floats; once gaps are gone they are integers again."""
    feature = split.features[column]
    if not (isinstance(feature, Value) and feature.dtype.startswith("float")):
        return split
    fractional = [v for v in split.unique(column) if not float(v).is_integer()]
    if fractional:
        raise DataError(f"The {split_name} split: labels in column '{column}' must be class names or integers; "
                        f"got {fractional[0]!r}. Regression targets are not supported.")
    return split.cast_column(column, Value("int64"))


MISSING_POLICIES = ("bad", "error", "skip", "keep")


def check_rows(split: Dataset, split_name: str, columns: dict[str, str], on_bad_example: str,
               image_sample: int | None = None, missing: str = "bad") -> tuple[Dataset, list[BadRow], dict[str, int]]:
    """Return ``split`` without its bad rows (``skip``) or raise a DataError naming them (``error``), and the
    number of rows missing each input.

    ``columns`` maps roles (image, text, text_pair, label) to column names; ``split`` holds only them.
    ``missing``: what a missing input (no image, empty text) is: ``bad`` (a bad row, as ``on_bad_example``
    says), ``error``, ``skip`` (dropped whatever ``on_bad_example`` says) or ``keep`` (the model handles it).
    """
    if "image" in columns:
        split = as_images(split, columns["image"])
    _check_column_types(split, split_name, columns)
    label = columns["label"]
    text_columns = [c for role, c in columns.items() if role in ("text", "text_pair")]
    found = _scan(split, _row_problems, {"text_columns": text_columns, "label_column": label,
                                         "label_feature": split.features[label], "image_column": columns.get("image")},
                  arrow=True)
    if len(found) == len(split) and all(r.startswith("label") for _, r, _ in found):
        raise DataError(f"The {split_name} split has only unlabelled rows (label missing or -1, as in hidden-label "
                        "test sets); it cannot be trained or evaluated on. Use another split "
                        "(data.test_split / data.validation_split).")
    if "image" in columns:
        image = columns["image"]
        undecoded = split.select_columns([image]).cast_column(image, Image(decode=False))
        sample = SAMPLE_IMAGES if image_sample is None else image_sample
        limit = len(split) if on_bad_example == "skip" else min(sample, len(split))
        checked = undecoded.select(range(limit)) if limit < len(split) else undecoded
        seen = {i for i, _, _ in found}
        found += [(i, r, m) for i, r, m in _scan(checked, _image_problems, {"column": image}, arrow=False)
                  if i not in seen]
    counts = _missing_counts(split, columns, found)
    if missing == "keep":
        found = [entry for entry in found if not entry[2]]
    elif missing in ("error", "skip"):
        absent = [BadRow(split_name, int(i), str(r)) for i, r, m in sorted(found) if m]
        if absent and missing == "error":
            raise DataError(f"The {split_name} split has {len(absent)} row(s) without one of the inputs: "
                            f"{_shown(absent)}. Set data.missing_modality=skip to drop them, or learn to train with "
                            "a learned stand-in for the missing input.")
    bad = [BadRow(split_name, int(i), str(r)) for i, r, m in sorted(found)]
    forced = {b.index for b, (_, _, m) in zip(bad, sorted(found)) if m and missing == "skip"}
    if on_bad_example == "error" and any(b.index not in forced for b in bad):
        real = [b for b in bad if b.index not in forced]
        raise DataError(f"The {split_name} split has {len(real)} bad row(s): {_shown(real)}. Fix or remove them, "
                        "or set data.on_bad_example=skip to drop them (they are then listed in metrics.json).")
    if bad:
        dropped = {b.index for b in bad}
        split = split.select(np.setdiff1d(np.arange(len(split)), np.fromiter(dropped, dtype=np.int64)))
        if len(split) == 0:
            raise DataError(f"Every row of the {split_name} split is bad (e.g. {bad[0].describe()}); nothing is left "
                            "to train or evaluate on.")
    return _integer_labels(split, split_name, label), bad, counts


def _shown(rows: list[BadRow]) -> str:
    return "; ".join(b.describe() for b in rows[:SHOWN]) + (f"; and {len(rows) - SHOWN} more" if len(rows) > SHOWN else "")


def _missing_counts(split: Dataset, columns: dict[str, str], found: list[tuple[int, str, bool]]) -> dict[str, int]:
    """Rows missing each input role, from the problems found (a row's first problem names its column)."""
    counts: dict[str, int] = {}
    for role, column in columns.items():
        if role == "label":
            continue
        marker = "no image" if role == "image" else f"column '{column}' is empty"
        counts[role] = sum(1 for _, reason, is_missing in found if is_missing and reason.startswith(marker))
    return counts


def skipped_report(bad: list[BadRow]) -> dict[str, Any]:
    """The ``skipped`` entry of ``metrics.json``: how many rows were dropped, and which."""
    by_split: dict[str, int] = {}
    for row in bad:
        by_split[row.split] = by_split.get(row.split, 0) + 1
    return {"count": len(bad), "by_split": by_split, "rows": [asdict(row) for row in bad[:MAX_RECORDED]],
            "rows_truncated": len(bad) > MAX_RECORDED}
