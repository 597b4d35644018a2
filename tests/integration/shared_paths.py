"""Where the integration tests find the real data and models: ``../shared`` beside the repository.

Without it (a fresh clone) the importing test module is skipped with the reason; CI sets
``HF_TRANSFER_REQUIRE_SHARED=1`` so that a missing folder fails instead of hiding the integration tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MOBILENET = SHARED / "models" / "mobilenetv2_100.tv_in1k"

if not SHARED.is_dir():
    reason = f"integration tests need the shared data folder at {SHARED}"
    if os.environ.get("HF_TRANSFER_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason} (HF_TRANSFER_REQUIRE_SHARED=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
