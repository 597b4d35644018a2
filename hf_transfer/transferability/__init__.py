"""Transferability scores: how well a frozen backbone's features suit a target task, without training.

Each score is a registered function ``score(features [N, D], labels [N], source_probs [N, C] | None) -> float``
(higher is better). Adding one is one new module with ``@register_score("name")`` and one import line below.
``hf_transfer.transferability.ranking`` scores candidate backbones with them (``hf-transfer rank``,
``model.name_or_path: auto``).
"""

from __future__ import annotations

from .base import SCORES, Score, compute_score, get_score, register_score

# Registration, in the order tables show the scores.
from . import logme  # noqa: E402,F401,I001
from . import leep  # noqa: E402,F401
from . import nce  # noqa: E402,F401
from . import hscore  # noqa: E402,F401

__all__ = ["SCORES", "Score", "compute_score", "get_score", "register_score"]
