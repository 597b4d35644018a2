"""NCE: negative conditional entropy of the target labels given the source model's hard predictions.

Tran et al., "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019:
NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z), with z the source head's argmax label.
"""

from __future__ import annotations

import numpy as np

from .base import label_array, register_score, source_array
from .leep import conditional, empirical_joint


@register_score("nce", title="NCE", needs_source=True)
def nce(features, labels, source_probs) -> float:
    """NCE (Tran et al., ICCV 2019): -H(target label | source model's predicted label)."""
    labels = label_array(labels)
    theta = source_array(source_probs, len(labels))
    hard = np.zeros_like(theta)
    hard[np.arange(len(labels)), theta.argmax(axis=1)] = 1.0
    joint = empirical_joint(labels, hard)
    given = conditional(joint)
    present = joint > 0
    return float(np.sum(joint[present] * np.log(given[present])))
