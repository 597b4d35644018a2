"""From raw splits to train / validation / test with one label set and known columns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from datasets import ClassLabel, Dataset, DatasetDict, Value

from ..config_utils import short
from ..errors import DataError
from ..recipe import DataSection
from .sampling import per_class_indices, stratified_indices, stratified_split
from .sources import load_raw
from .validation import BadRow, check_label_type, check_rows

logger = logging.getLogger(__name__)

LABEL = "labels"
"""Name of the integer label column after preparation (what ``transformers`` models expect)."""

#: Column names tried, in order, when the recipe does not name a column.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "pixel_values", "picture", "photo"),
    "text": ("text", "sentence", "sentence1", "content", "review", "question", "document"),
    "text_pair": ("text_pair", "sentence2", "hypothesis", "question2"),
    "label": ("label", "labels", "fine_label", "coarse_label", "class", "target", "category"),
}
VALIDATION_NAMES = ("validation", "valid", "val", "dev")
TEST_NAMES = ("test", "testing")


@dataclass
class PreparedData:
    """Splits with a ``labels`` ClassLabel column, the label names and the input columns by role."""

    train: Dataset
    validation: Dataset
    test: Dataset | None
    label_names: list[str]
    columns: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    skipped: list[BadRow] = field(default_factory=list)
    """Rows dropped by ``data.on_bad_example: skip`` (indices into the raw splits)."""
    notes: list[str] = field(default_factory=list)
    """Things the recipe asked for that the data could not give exactly (e.g. a validation fraction)."""
    missing: dict[str, dict[str, int]] = field(default_factory=dict)
    """Rows per split without an input (``data.missing_modality``), by role; empty when nothing is missing."""

    def sizes(self) -> dict[str, int]:
        sizes = {"train": len(self.train), "validation": len(self.validation)}
        if self.test is not None:
            sizes["test"] = len(self.test)
        return sizes


def column_values(split: Dataset, column: str) -> list:
    """One column as a Python list, read from Arrow in one go (``list(split[column])`` walks it row by row)."""
    return split.select_columns([column]).with_format("arrow")[:][column].to_pylist()


def resolve_column(role: str, requested: str | None, available: list[str], required: bool = True) -> str | None:
    if requested is not None:
        if requested not in available:
            raise DataError(f"'data.{role}_column' = {short(requested)} is not a column of the data. "
                            f"Columns: {', '.join(available)}.")
        return requested
    candidates = COLUMN_CANDIDATES.get(role, (role,))  # a role of a task from outside: the column of its name
    for candidate in candidates:
        if candidate in available:
            return candidate
    if required:
        raise DataError(f"Could not find the {role} column (tried {', '.join(candidates)}). "
                        f"Columns: {', '.join(available)}. Set 'data.{role}_column'.")
    return None


def _require_distinct(columns: dict[str, str], section: DataSection) -> None:
    """One column cannot be both input and label (the model would read its answer) or two inputs at once."""
    roles_by_column: dict[str, list[str]] = {}
    for role, column in columns.items():
        roles_by_column.setdefault(column, []).append(role)
    for column, roles in roles_by_column.items():
        if len(roles) > 1:
            fields = " and ".join(f"'data.{role}_column'" + ("" if getattr(section, f"{role}_column", None) else
                                                              " (found by name)") for role in roles)
            raise DataError(f"Column '{column}' is used as both the {' and the '.join(roles)} column ({fields}); "
                            "each role needs its own column: set the data.<role>_column fields to different columns.")


def _label_names(train: Dataset, column: str) -> list[str]:
    feature = train.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    check_label_type(feature, "train", column)
    values = [v for v in train.unique(column) if v is not None]
    if not values:
        raise DataError(f"The label column '{column}' of the train split is empty.")
    if all(isinstance(v, bool) for v in values) or not all(isinstance(v, (int, str)) for v in values):
        raise DataError(f"Labels in column '{column}' must be class names or integers; got e.g. {short(values[:3])}.")
    return [str(v) for v in sorted(values)]


def _near_duplicates(names: list[str]) -> list[str]:
    """Labels that differ only by case or surrounding spaces ("positive", "Positive ") are kept apart, since a user
    may mean them, but are far more often one class typed two ways: say so rather than train on it silently."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.strip().casefold(), []).append(name)
    similar = [group for group in groups.values() if len(group) > 1]
    if not similar:
        return []
    shown = "; ".join(" / ".join(short(n, 30) for n in group[:4]) for group in similar[:5])
    more = f" and {len(similar) - 5} more group(s)" if len(similar) > 5 else ""
    note = (f"labels that differ only by case or surrounding spaces are separate classes: {shown}{more}; "
            "if they mean the same class, make them identical in the data")
    logger.warning("Note: %s.", note)
    return [note]


def encode_labels(split: Dataset, split_name: str, column: str, names: list[str]) -> Dataset:
    """Turn ``column`` into the shared ``labels`` ClassLabel column; unknown labels are an error."""
    target = ClassLabel(names=names)
    feature = split.features[column]
    check_label_type(feature, split_name, column)
    if isinstance(feature, ClassLabel):
        if list(feature.names) != names:
            unknown = sorted(set(feature.names) - set(names))
            if unknown:
                raise DataError(f"The {split_name} split has labels that train does not: {', '.join(unknown)}.")
            mapping = {i: names.index(n) for i, n in enumerate(feature.names)}
            split = split.cast_column(column, Value("int64"))  # the old ClassLabel would reject new ids
            split = split.map(lambda b: {column: [mapping.get(v, v) for v in b[column]]}, batched=True,
                              desc=f"Aligning {split_name} labels")
        elif min(split.unique(column), default=0) < 0:
            raise DataError(f"The {split_name} split has unlabelled rows (label -1); "
                            "hidden-label test sets cannot be evaluated. Use another split.")
    else:
        present = {str(v) for v in split.unique(column)}
        unknown = sorted(present - set(names))
        if unknown:
            shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise DataError(f"The {split_name} split has labels that train does not: {shown}. "
                            "Every evaluated label must occur in train.")
        index = {n: i for i, n in enumerate(names)}
        split = split.map(lambda b: {column: [index[str(v)] for v in b[column]]}, batched=True,
                          desc=f"Encoding {split_name} labels")
        split = split.cast_column(column, Value("int64"))
    split = split.cast_column(column, target)
    return split.rename_column(column, LABEL) if column != LABEL else split


def _unlabelled(split: Dataset, column: str) -> bool:
    if column not in split.column_names:
        return False
    values = set(split.unique(column))
    return values <= {-1, None}


def _find_split(raw: DatasetDict, requested: str | None, names: tuple[str, ...], field_name: str) -> str | None:
    if requested is not None:
        if requested not in raw:
            raise DataError(f"'data.{field_name}' = {short(requested)} is not a split. Splits: {', '.join(raw)}.")
        return requested
    return next((n for n in names if n in raw), None)


def _fraction_note(split_name: str, requested: float, held: int, total: int) -> list[str]:
    """A stratified split keeps at least one example of every class with two or more, so small classes can
    push the held-out share far from the recipe's fraction; say so rather than train on less than expected."""
    actual = held / total if total else 0.0
    if abs(actual - requested) < 0.01 or abs(actual - requested) <= 0.2 * requested:
        return []
    note = (f"the {split_name} split is {held} of {total} train rows ({actual:.0%}), not the requested "
            f"data.{split_name}_fraction {requested:.0%}: stratifying keeps at least one example of each class with "
            f"two or more (and none of a class with one); add examples or give a {split_name} split "
            f"(data.{split_name}_split)")
    logger.warning("Note: %s.", note)
    return [note]


def subset(split: Dataset, size: int | None, seed: int) -> Dataset:
    if size is None or size >= len(split):
        return split
    return split.select(stratified_indices(column_values(split, LABEL), size, seed))


def prepare_data(section: DataSection, input_roles: tuple[str, ...], seed: int) -> PreparedData:
    """Load, check and split the data; ``input_roles`` are e.g. ("image",) or ("text", "text_pair")."""
    raw = load_raw(section)
    if section.train_split not in raw:
        raise DataError(f"'data.train_split' = {short(section.train_split)} is not a split. Splits: {', '.join(raw)}.")
    train = raw[section.train_split]
    if len(train) == 0:
        raise DataError(f"The train split '{section.train_split}' is empty.")
    available = list(train.column_names)
    columns = {}
    for role in input_roles:
        requested = getattr(section, f"{role}_column", None)
        column = resolve_column(role, requested, available, required=role != "text_pair")
        if column is not None:
            columns[role] = column
    columns["label"] = resolve_column("label", section.label_column, available)
    _require_distinct(columns, section)
    keep = list(dict.fromkeys(columns.values()))
    sources: dict[str, str] = {}
    skipped: list[BadRow] = []
    missing_counts: dict[str, dict[str, int]] = {}
    # Only a task that reads several inputs can do without one of them (data.missing_modality).
    several = len([role for role in input_roles if role in columns and role != "text_pair"]) > 1
    missing_policy = {"error": "error", "skip": "skip", "learn": "keep"}[section.missing_modality] if several else "bad"

    def checked(split: Dataset, split_name: str) -> Dataset:
        absent = [c for c in keep if c not in split.column_names]
        if absent:
            raise DataError(f"The {split_name} split lacks column(s) {', '.join(absent)}. "
                            f"Columns: {', '.join(split.column_names)}.")
        if len(split) == 0:
            raise DataError(f"The {split_name} split is empty.")
        split, bad, counts = check_rows(split.select_columns(keep), split_name, columns, section.on_bad_example,
                                        missing=missing_policy)
        skipped.extend(bad)
        if several and any(counts.values()):
            missing_counts[split_name] = counts
        return split

    train = checked(train, "train")
    names = _label_names(train, columns["label"])
    if len(names) < 2:
        raise DataError(f"The train split has a single class ({names[0]}); classification needs at least two.")

    def clean(split: Dataset, split_name: str) -> Dataset:
        return encode_labels(checked(split, split_name), split_name, columns["label"], names)

    train = encode_labels(train, "train", columns["label"], names)
    validation_name = _find_split(raw, section.validation_split, VALIDATION_NAMES, "validation_split")
    test_name = _find_split(raw, section.test_split, TEST_NAMES, "test_split")
    if test_name and section.test_split is None and _unlabelled(raw[test_name], columns["label"]):
        # GLUE-style benchmarks hide test labels; their validation split is the usual test set.
        logger.warning("Split '%s' has no labels; using '%s' as the test split and carving validation from train.",
                       test_name, validation_name)
        test_name, validation_name = validation_name, None
    test = clean(raw[test_name], test_name) if test_name else None
    sources["test"] = f"split '{test_name}'" if test_name else "none"
    notes: list[str] = _near_duplicates(names)
    if test is None and section.test_fraction > 0:
        rest, held = stratified_split(column_values(train, LABEL), section.test_fraction, seed)
        train, test = train.select(rest), train.select(held)
        sources["test"] = f"{section.test_fraction:.0%} of train (stratified, seed {seed})"
        notes += _fraction_note("test", section.test_fraction, len(held), len(rest) + len(held))
    if validation_name:
        validation = clean(raw[validation_name], validation_name)
        sources["validation"] = f"split '{validation_name}'"
    else:
        rest, held = stratified_split(column_values(train, LABEL), section.validation_fraction, seed)
        train, validation = train.select(rest), train.select(held)
        sources["validation"] = f"{section.validation_fraction:.0%} of train (stratified, seed {seed})"
        notes += _fraction_note("validation", section.validation_fraction, len(held), len(rest) + len(held))
        if len(validation) == 0:
            raise DataError("No validation rows could be carved from train: every class has a single example. "
                            "Add examples or give a validation split (data.validation_split).")

    if section.samples_per_class is not None:
        train = train.select(per_class_indices(column_values(train, LABEL), section.samples_per_class, seed))
    train = subset(train, section.max_train_samples, seed)
    validation = subset(validation, section.max_eval_samples, seed)
    if test is not None:
        test = subset(test, section.max_test_samples, seed)
    unseen = sorted(set(range(len(names))) - set(train.unique(LABEL)))
    if unseen:
        logger.warning("After subsampling, train has no example of: %s", ", ".join(names[i] for i in unseen))
    return PreparedData(train=train, validation=validation, test=test, label_names=names,
                        columns=columns, sources=sources, skipped=skipped, notes=notes, missing=missing_counts)
