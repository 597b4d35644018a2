"""Raw data sources: anything ``datasets.load_dataset`` understands, plus small builtins.

Builtins make the offline quickstart possible: scikit-learn ships real data (handwritten digits)
that needs no download.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset

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
        loaded = load_dataset(path, **{k: v for k, v in kwargs.items() if v is not None})
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
