"""Files written whole or not at all: a temporary name in the same folder, then one rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part; a failed
    write leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def check_output_path(path: str | Path, flag: str, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work: a file where a folder is wanted (or the
    reverse), a file on the way to it, or a folder without write permission. Missing folders are created later."""
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise OutputError(f"{flag} '{short_path(path)}' is a {'file' if folder else 'folder'}, not a {kind}; "
                          f"give the path of a new {kind}.")
    start = path if path.is_dir() else path.parent
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{flag} '{short_path(path)}' cannot be created: '{short_path(existing)}' is a file, not a "
                          f"folder. Choose another {flag}.")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{flag} '{short_path(path)}' cannot be written: no write permission on "
                          f"'{short_path(existing)}'. Choose another {flag}.")
    return path


def short_path(path: Path, limit: int = 80) -> str:
    text = str(path)
    return text if len(text) <= limit else "..." + text[-(limit - 3):]
