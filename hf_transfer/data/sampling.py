"""Seeded, stratified index selection (subsets, few-shot, validation/test splits)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _by_class(labels: Sequence[int]) -> dict[int, np.ndarray]:
    labels = np.asarray(labels)
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def stratified_indices(labels: Sequence[int], size: int, seed: int, every_class: bool = False) -> list[int]:
    """``size`` indices whose class proportions follow ``labels`` (largest remainders), sorted.

    ``every_class``: one example of each class first (when ``size`` allows), the rest proportionally, so a
    small subset of imbalanced data still has every label. ``datasets.train_test_split(stratify_by_column=...)``
    needs at least one example per class in both parts, which fails for small subsets of many-class data.
    """
    rng = np.random.default_rng(seed)
    groups = _by_class(labels)
    total = sum(len(g) for g in groups.values())
    if size >= total:
        return list(range(total))
    floor = 1 if every_class and size >= len(groups) else 0
    spread, pool = size - floor * len(groups), total - floor * len(groups)
    quotas = {c: spread * (len(g) - floor) / pool for c, g in groups.items()}
    counts = {c: floor + int(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: quotas[c] - int(quotas[c]), reverse=True)[: size - sum(counts.values())]:
        counts[c] += 1
    chosen = [rng.permutation(groups[c])[: counts[c]] for c in groups]
    return sorted(int(i) for i in np.concatenate(chosen))


def per_class_indices(labels: Sequence[int], per_class: int, seed: int) -> list[int]:
    """At most ``per_class`` indices of every class (few-shot subsets), sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(group)[:per_class] for group in _by_class(labels).values()]
    return sorted(int(i) for i in np.concatenate(chosen))


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (rest, held_out) with ``fraction`` of every class held out (at least one)."""
    rng = np.random.default_rng(seed)
    held_out = []
    for group in _by_class(labels).values():
        take = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        held_out.extend(rng.permutation(group)[:take].tolist())
    held = set(held_out)
    return [i for i in range(len(labels)) if i not in held], sorted(held)
