"""LEEP: how well the source model's own label predictions, re-mapped to the target labels, explain them.

Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned Representations", ICML 2020.
With theta_i the source model's softmax over its label set Z for example i, the empirical joint
P(y, z) = 1/N sum_i theta_i(z) [y_i = y] gives P(y | z); LEEP = 1/N sum_i log sum_z P(y_i | z) theta_i(z).
"""

from __future__ import annotations

import numpy as np

from .base import label_array, register_score, source_array


def empirical_joint(labels: np.ndarray, source: np.ndarray) -> np.ndarray:
    """P(y, z) [K, Z]: ``source`` rows are probabilities (soft, LEEP) or one-hot (hard, NCE)."""
    classes = np.unique(labels)
    one_hot = (labels[:, None] == classes[None, :]).astype(np.float64)
    return one_hot.T @ source / len(labels)


def conditional(joint: np.ndarray) -> np.ndarray:
    """P(y | z) from P(y, z); source labels never predicted get zero columns."""
    marginal = joint.sum(axis=0, keepdims=True)
    return np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)


@register_score("leep", title="LEEP", needs_source=True)
def leep(features, labels, source_probs) -> float:
    """LEEP (Nguyen et al., ICML 2020): log expected empirical prediction of the re-mapped source head."""
    labels = label_array(labels)
    theta = source_array(source_probs, len(labels))
    expected = theta @ conditional(empirical_joint(labels, theta)).T
    index = np.searchsorted(np.unique(labels), labels)
    return float(np.mean(np.log(np.maximum(expected[np.arange(len(labels)), index], 1e-300))))
