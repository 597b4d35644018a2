"""Where the integration tests find the real data and models: ``../shared`` beside the repository.

Importing this fails the importing test module (not skips it) when the folder is missing, as CI always has it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MOBILENET = SHARED / "models" / "mobilenetv2_100.tv_in1k"

if not SHARED.is_dir():
    pytest.fail(f"integration tests need the shared data folder at {SHARED}", pytrace=False)
