"""H-score: how much of the features' variance the class-conditional means explain.

Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer Learning", ICIP 2019:
H(f) = tr(cov(f)^-1 cov(E[f | y])). With more dimensions than examples cov(f) is singular, so it is
replaced by its Ledoit-Wolf shrinkage estimate, as Ibrahim et al. ("Newer is not always better: rethinking
transferability metrics", ICLR 2023) recommend.
"""

from __future__ import annotations

import numpy as np

from .base import as_arrays, register_score


@register_score("hscore", title="H-score")
def hscore(features, labels, source_probs=None) -> float:
    """H-score (Bao et al., ICIP 2019), with a shrinkage covariance for stability."""
    from sklearn.covariance import ledoit_wolf

    features, labels = as_arrays(features, labels)
    centred = features - features.mean(axis=0)
    covariance, _ = ledoit_wolf(centred, assume_centered=True)
    class_means = np.zeros_like(centred)
    for label in np.unique(labels):
        rows = labels == label
        class_means[rows] = centred[rows].mean(axis=0)
    between = class_means.T @ class_means / len(labels)
    return float(np.trace(np.linalg.solve(covariance, between)))
