"""Examples without labels, for methods that label them themselves (a distillation teacher's soft outputs).

They are read like the ``data`` section (the same sources and column detection, no label column) and may come
from the very source of the labelled data: ``exclude_labelled`` drops every row whose inputs equal a row of the
run's train, validation or test split, so "1,000 labelled sentences of SST-2 train, the rest unlabelled" is one
recipe and nothing the run is evaluated on is ever trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset

from ..config_utils import short
from ..errors import DataError, RecipeError
from ..recipe import DataSection
from .prepare import LABEL, PreparedData, column_values, resolve_column
from .sources import load_raw
from .validation import check_rows

FIELD = "method.unlabelled"
"""Where the section sits in a recipe; errors name its fields with this prefix."""
NO_LABEL = -100
"""The ``labels`` value of an unlabelled row: what ``torch.nn.functional.cross_entropy`` ignores by default."""
_PLACEHOLDER = "__hf_transfer_no_label__"


@dataclass
class UnlabelledSection:
    """Where unlabelled examples come from: a data source, one split and its input columns (found by name
    like ``data``'s when not given)."""

    path: str
    """Hub dataset id, local folder/file or builtin, as ``data.path``; it may be the labelled data's own."""
    name: str | None = None
    revision: str | None = None
    data_files: dict[str, Any] | None = None
    split: str = "train"
    image_column: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    max_samples: int | None = None
    """A seeded random sample of this many rows, taken after ``exclude_labelled``; all rows by default."""
    exclude_labelled: bool = True
    """Drop rows whose inputs equal a row of the run's train, validation or test split."""

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise RecipeError(f"'{FIELD}.path' must not be empty: name the data to read unlabelled examples from.")
        if self.max_samples is not None and self.max_samples < 1:
            raise RecipeError(f"'{FIELD}.max_samples' must be a positive integer; got {self.max_samples}.")


@dataclass
class UnlabelledData:
    """The unlabelled examples, ready for a task's ``model_inputs``, and how they were chosen."""

    examples: Dataset
    """The input columns plus a ``labels`` column of ``NO_LABEL``."""
    columns: dict[str, str]
    """Input role -> column, as ``PreparedData.columns`` (with ``label`` -> ``labels``)."""
    split_rows: int
    excluded: int = 0
    """Rows dropped because the run's labelled splits hold the same inputs."""
    dropped: list[int] = field(default_factory=list)
    """Rows dropped as unreadable or empty (``data.on_bad_example: skip``), by index in the split."""

    def as_evaluation(self, label_names: list[str]) -> PreparedData:
        """The examples as the ``validation`` split of a ``PreparedData`` whose train split is empty: a task
        preprocesses them as evaluation data (no augmentation, the model's recorded text length)."""
        return PreparedData(train=self.examples.select([]), validation=self.examples, test=None,
                            label_names=list(label_names), columns=dict(self.columns))

    def report(self) -> dict[str, Any]:
        return {"examples": len(self.examples), "split_rows": self.split_rows, "excluded_labelled": self.excluded,
                "dropped_bad": len(self.dropped)}


def _renamed(error: DataError, section: UnlabelledSection) -> DataError:
    """A ``data`` error about the unlabelled source, naming ``method.unlabelled`` fields instead."""
    text = str(error)
    if "'data." in text:
        return DataError(text.replace("'data.", f"'{FIELD}."))
    return DataError(f"'{FIELD}.path' = {short(section.path)}: {text}")


def _hashable(value: Any) -> Any:
    """Text as is; an undecoded image by its file path, or a digest of its bytes."""
    if isinstance(value, dict):
        content = value.get("bytes")
        return value.get("path"), hashlib.blake2b(content, digest_size=16).digest() if content else None
    return value


def _row_keys(split: Dataset, columns: list[str]) -> list[tuple]:
    values = [column_values(split, column) for column in columns]
    return [tuple(_hashable(v) for v in row) for row in zip(*values)]


def load_unlabelled(section: UnlabelledSection, labelled: PreparedData, on_bad_example: str,
                    seed: int) -> UnlabelledData:
    """Read the unlabelled split with the inputs the labelled data has (``labelled.columns``), drop rows that
    ``labelled`` holds (``exclude_labelled``), sample ``max_samples`` and check the rows as ``data`` checks its own."""
    roles = [role for role in labelled.columns if role != "label"]
    try:
        raw = load_raw(DataSection(path=section.path, name=section.name, revision=section.revision,
                                   data_files=section.data_files))
    except DataError as error:
        raise _renamed(error, section) from None
    if section.split not in raw:
        raise DataError(f"'{FIELD}.split' = {short(section.split)} is not a split of {short(section.path)}. "
                        f"Splits: {', '.join(raw)}.")
    split = raw[section.split]
    if len(split) == 0:
        raise DataError(f"'{FIELD}': split '{section.split}' of {short(section.path)} is empty; point "
                        f"{FIELD}.path or {FIELD}.split at rows to learn from.")
    columns: dict[str, str] = {}
    try:
        for role in roles:
            columns[role] = resolve_column(role, getattr(section, f"{role}_column", None), list(split.column_names))
    except DataError as error:
        raise _renamed(error, section) from None
    split = split.select_columns(list(dict.fromkeys(columns.values())))
    keep = np.arange(len(split))
    if section.exclude_labelled:
        seen: set[tuple] = set()
        for part in (labelled.train, labelled.validation, labelled.test):
            if part is not None:
                seen.update(_row_keys(part, [labelled.columns[role] for role in roles]))
        keys = _row_keys(split, [columns[role] for role in roles])
        keep = np.fromiter((i for i, key in enumerate(keys) if key not in seen), dtype=np.int64)
        if len(keep) == 0:
            raise DataError(f"'{FIELD}': all {len(split)} rows of split '{section.split}' are also in the run's "
                            f"train, validation or test split ({FIELD}.exclude_labelled), so no unlabelled example "
                            f"is left; point {FIELD}.path or {FIELD}.split at other rows.")
    excluded = len(split) - len(keep)
    if section.max_samples is not None and len(keep) > section.max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(keep, section.max_samples, replace=False))
    chosen = split.select(keep) if len(keep) < len(split) else split
    chosen = chosen.add_column(_PLACEHOLDER, np.zeros(len(chosen), dtype=np.int64))
    try:
        checked, bad, _ = check_rows(chosen, f"unlabelled '{section.split}'", {**columns, "label": _PLACEHOLDER},
                                     on_bad_example)
    except DataError as error:
        raise _renamed(error, section) from None
    examples = checked.remove_columns(_PLACEHOLDER)
    examples = examples.add_column(LABEL, np.full(len(examples), NO_LABEL, dtype=np.int64))
    return UnlabelledData(examples=examples, columns={**columns, "label": LABEL}, split_rows=len(split),
                          excluded=excluded, dropped=[int(keep[row.index]) for row in bad])
