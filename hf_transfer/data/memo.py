"""An evaluation split that keeps its preprocessed examples in memory after their first use.

Images are decoded and resized on every access, and the evaluation transform gives the same pixels each
time, so every evaluation after the first (one per epoch with ``eval_strategy: epoch``, then the final
report) would redo identical work, a sizeable share of a small model's forward pass (docs/performance.md).
``datasets`` caches ``map`` results on disk, but a decoded copy of an image split is large there and must be
written in full before the first evaluation can start; this keeps uint8 tensors in memory, filled by the
evaluations themselves, up to a budget.
"""

from __future__ import annotations

from typing import Any

import torch


class MemoisedSplit(torch.utils.data.Dataset):
    """``split``'s examples as it returns them, kept after the first access while they fit in ``budget_mb``.

    Examples past the budget are fetched from ``split`` every time, so the budget caps memory, not coverage.
    """

    def __init__(self, split: Any, budget_mb: int) -> None:
        self.split = split
        self.budget_bytes = budget_mb * 2**20
        self.used_bytes = 0
        self.examples: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch (``DataLoader`` fetches whole batches through this): one call to ``split`` for the misses."""
        missing = [i for i in dict.fromkeys(indices) if i not in self.examples]
        fetched = dict(zip(missing, self.split.__getitems__(missing))) if missing else {}
        for index, example in fetched.items():
            self._keep(index, example)
        return [self.examples[i] if i in self.examples else fetched[i] for i in indices]

    def _keep(self, index: int, example: dict[str, Any]) -> None:
        size = sum(value.nbytes for value in example.values() if isinstance(value, torch.Tensor))
        if self.used_bytes + size <= self.budget_bytes:
            self.examples[index] = example
            self.used_bytes += size
