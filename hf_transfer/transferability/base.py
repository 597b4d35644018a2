"""The score registry: one interface for every transferability estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..registry import SCORES

ScoreFunction = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]


@dataclass(frozen=True)
class Score:
    """A registered score; ``needs_source`` scores read the source model's own class probabilities."""

    name: str
    function: ScoreFunction
    needs_source: bool
    title: str

    @property
    def paper(self) -> str:
        """First line of the function's docstring: the method and its paper."""
        return (self.function.__doc__ or "").strip().splitlines()[0]


def register_score(name: str, title: str, needs_source: bool = False) -> Callable[[ScoreFunction], ScoreFunction]:
    """Register a score function in ``SCORES`` as a ``Score`` with its title and whether it needs the source."""

    def decorate(function: ScoreFunction) -> ScoreFunction:
        SCORES.add(name, Score(name=name, function=function, needs_source=needs_source, title=title))
        return function

    return decorate


def get_score(name: str) -> Score:
    return SCORES.lookup(name)


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)


def label_array(labels: Any) -> np.ndarray:
    labels = _numpy(labels).astype(np.int64)
    if labels.ndim != 1:
        raise ValueError(f"expected labels [N]; got shape {labels.shape}")
    return labels


def as_arrays(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 features [N, D] and int labels [N] from numpy arrays or torch tensors."""
    features, labels = _numpy(features).astype(np.float64), label_array(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"expected features [N, D] and labels [N]; got {features.shape} and {labels.shape}")
    return features, labels


def source_array(source_probs: Any, size: int) -> np.ndarray:
    probs = _numpy(source_probs).astype(np.float64)
    if probs.ndim != 2 or probs.shape[0] != size:
        raise ValueError(f"expected source probabilities [N={size}, C]; got {probs.shape}")
    return probs


def compute_score(name: str, features: Any, labels: Any, source_probs: Any = None) -> float | None:
    """The score, or ``None`` when it needs source probabilities and there are none (reported as n/a)."""
    score = get_score(name)
    if score.needs_source and source_probs is None:
        return None
    return float(score.function(features, labels, source_probs))
