"""Raw data sources: anything ``datasets.load_dataset`` understands, plus small builtins.

Builtins make the offline quickstart possible: scikit-learn ships real data (handwritten digits)
that needs no download.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import logging
import re
from pathlib import Path
from typing import Callable, Iterator

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset
from datasets.exceptions import DatasetGenerationError

from ..config_utils import short
from ..errors import DataError
from ..recipe import DataSection

BUILTIN_SOURCES: dict[str, Callable[[DataSection], DatasetDict]] = {}


def register_source(name: str):
    def decorate(builder: Callable[[DataSection], DatasetDict]):
        BUILTIN_SOURCES[name] = builder
        return builder

    return decorate


@register_source("sklearn:digits")
def sklearn_digits(_: DataSection, inverted: bool = False) -> DatasetDict:
    """1,797 real 8x8 handwritten digits (UCI), with a fixed stratified 80/20 train/test split."""
    import numpy as np
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    if inverted:
        pixels = 255 - pixels
    images = [PILImage.fromarray(p, mode="L") for p in pixels]
    labels = digits.target.tolist()
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)

    def subset(indices) -> Dataset:
        return Dataset.from_dict({"image": [images[i] for i in indices], "label": [labels[i] for i in indices]},
                                 features=features)

    return DatasetDict(train=subset(train_idx), test=subset(test_idx))


@register_source("sklearn:digits-inverted")
def sklearn_digits_inverted(section: DataSection) -> DatasetDict:
    """The same digits and split as ``sklearn:digits``, dark strokes on white: a deterministic domain shift
    (a target domain for domain adaptation, e.g. ``recipes/dann-digits.yaml``)."""
    return sklearn_digits(section, inverted=True)


TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
MAX_DIAGNOSED_FILES = 1000
"""Delimited files read one by one to name the bad one after ``datasets`` failed (only then)."""
CSV_BUILDER_LOGGER = "datasets.packaged_modules.csv.csv"
"""Logs "Failed to read file" with pandas' wording before re-raising; our error says it better."""


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only critical messages from ``logger_name`` while the block runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _table_files(local: Path) -> list[Path]:
    if local.is_file():
        return [local] if local.suffix in TABLE_DELIMITERS else []
    files = sorted(p for p in local.rglob("*") if p.suffix in TABLE_DELIMITERS and p.is_file())
    return files[:MAX_DIAGNOSED_FILES]


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def csv_problem(path: Path) -> str | None:
    """Why a csv/tsv file cannot become a table (empty, not UTF-8, ragged, unclosed quote), or None.

    ``datasets`` reports these without the file's name (pandas' own messages count lines differently), so
    the file is read again with the standard ``csv`` module, only after loading failed, to say where.
    """
    raw = path.read_bytes()
    if not raw.strip():
        return "is empty: write a header row (the column names) and at least one row of data"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw[:1024]:
        return "is UTF-16 encoded; save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8, or 'CSV UTF-8' in a spreadsheet)"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return (f"is not UTF-8 (byte 0x{raw[error.start]:02x} on line {line}, e.g. Latin-1 or Windows-1252); "
                "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    delimiter = TABLE_DELIMITERS[path.suffix]
    shown = "tab" if delimiter == "\t" else f"'{delimiter}'"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start, rows = 1, 0
    try:
        header = next(reader, [])
        for row in reader:
            rows += bool(row)
            if len(row) > len(header):
                return (f"has {len(row)} fields on line {reader.line_num} but its header has {len(header)}: quote "
                        f"values that contain {shown} (\"a, b\") or remove the extra field")
            start = reader.line_num + 1
    except csv.Error as error:  # strict: also what pandas accepts, so only an unclosed quote is named
        if "unexpected end of data" in str(error):
            return (f"has a quote (\") opened on line {start} that is never closed; close it, or write a quote "
                    "inside a value as two (\"\")")
        return None
    return "has a header but no rows of data; add rows or remove the file" if rows == 0 else None


def load_raw(section: DataSection) -> DatasetDict:
    """Load every split of the recipe's data source as a ``DatasetDict``."""
    if section.path in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[section.path](section)
    if section.path.startswith("sklearn:"):
        raise DataError(f"Unknown builtin data source '{section.path}'. Builtins: {', '.join(BUILTIN_SOURCES)}.")
    local = Path(section.path).expanduser()
    looks_local = section.path.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.exists():
        raise DataError(f"'data.path': the folder or file '{section.path}' does not exist.")
    kwargs = {"name": section.name, "revision": section.revision, "data_files": section.data_files}
    path = section.path
    if local.is_file():  # a single csv/json/parquet file: load it with the matching builder
        builder = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(local.suffix)
        if builder is None:
            raise DataError(f"'data.path' = '{section.path}': unsupported file type; use csv, json(l) or parquet.")
        path, kwargs["data_files"] = builder, {"train": str(local)}
        if local.suffix == ".tsv":
            kwargs["delimiter"] = "\t"
    try:
        with _quiet(CSV_BUILDER_LOGGER):
            loaded = load_dataset(path, **{k: v for k, v in kwargs.items() if v is not None})
    except DatasetGenerationError as error:  # a file that the builder cannot parse; say which and where
        for file in _table_files(local) if looks_local else []:
            problem = csv_problem(file)
            if problem:
                raise DataError(f"The data file '{file}' {problem}.") from None
        cause = _root_cause(error)
        raise DataError(f"Could not read the data files of 'data.path' = '{section.path}': {type(cause).__name__}: "
                        f"{short(str(cause))}. Check that every file is valid csv/json/parquet in UTF-8.") from None
    except (FileNotFoundError, ConnectionError, ValueError) as error:
        empty = re.search(r'Instruction "([^"]+)" corresponds to no data', str(error))
        if empty:  # datasets' wording for a split whose file holds no rows
            raise DataError(f"The {empty.group(1)} split is empty: its file in '{section.path}' holds no rows.") from None
        where = "local folder" if looks_local else "Hub dataset id"
        raise DataError(f"Could not load 'data.path' = '{section.path}' ({where}): {error}. Check the path or id, "
                        "or point data.path at a local copy (HF_HUB_OFFLINE=1 needs a cached or local dataset).") from None
    if isinstance(loaded, Dataset):
        loaded = DatasetDict(train=loaded)
    return loaded
