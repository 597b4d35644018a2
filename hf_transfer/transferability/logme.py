"""LogME: the log marginal evidence of a Bayesian linear model on frozen features.

You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021. For each
class (one-hot target t), the model t = F w + noise with prior w ~ N(0, 1/alpha I) and noise N(0, 1/beta I)
has evidence p(t | F, alpha, beta); alpha and beta are set by MacKay's fixed-point iteration, which needs
one SVD of F for all classes. The score is the mean over classes of the maximised log evidence per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import as_arrays, register_score

MAX_ITERATIONS = 100
TOLERANCE = 1e-5
_TINY = 1e-12


@dataclass(frozen=True)
class Spectrum:
    """``F = U diag(s) V^T`` once, shared by every class; ``sigma = s**2`` are the eigenvalues of F^T F."""

    u: np.ndarray
    sigma: np.ndarray
    n: int
    d: int

    @classmethod
    def of(cls, features: np.ndarray) -> "Spectrum":
        u, s, _ = np.linalg.svd(features, full_matrices=False)
        return cls(u=u, sigma=s ** 2, n=features.shape[0], d=features.shape[1])


def _terms(spectrum: Spectrum, z2: np.ndarray, outside: float, alpha: float, beta: float):
    """gamma (effective number of parameters), m^T m and ||F m - t||^2 at the posterior mean m."""
    denominator = alpha + beta * spectrum.sigma
    gamma = float(np.sum(beta * spectrum.sigma / denominator))
    mm = float(np.sum(beta ** 2 * spectrum.sigma * z2 / denominator ** 2))
    residual = float(np.sum(z2 * (alpha / denominator) ** 2)) + outside
    return gamma, mm, residual


def log_evidence(spectrum: Spectrum, target: np.ndarray, alpha: float, beta: float) -> float:
    """log p(target | F, alpha, beta) (equation 2 of the paper), in O(N r) from the SVD."""
    z = spectrum.u.T @ target
    z2 = z ** 2
    outside = max(float(target @ target - z2.sum()), 0.0)
    _, mm, residual = _terms(spectrum, z2, outside, alpha, beta)
    n, d, rank = spectrum.n, spectrum.d, len(spectrum.sigma)
    log_det = float(np.sum(np.log(alpha + beta * spectrum.sigma))) + (d - rank) * np.log(alpha)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * residual - alpha / 2 * mm - log_det / 2)


def maximise_evidence(spectrum: Spectrum, target: np.ndarray) -> tuple[float, float]:
    """MacKay's fixed point: alpha = gamma / m^T m, beta = (N - gamma) / ||F m - t||^2 (Algorithm 1)."""
    z2 = (spectrum.u.T @ target) ** 2
    outside = max(float(target @ target - z2.sum()), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        gamma, mm, residual = _terms(spectrum, z2, outside, alpha, beta)
        new_alpha = gamma / max(mm, _TINY)
        new_beta = (spectrum.n - gamma) / max(residual, _TINY)
        converged = abs(new_alpha - alpha) / alpha < TOLERANCE and abs(new_beta - beta) / beta < TOLERANCE
        alpha, beta = max(new_alpha, _TINY), max(new_beta, _TINY)
        if converged:
            break
    return alpha, beta


@register_score("logme", title="LogME")
def logme(features, labels, source_probs=None) -> float:
    """LogME (You et al., ICML 2021): mean over classes of the maximised log evidence per example."""
    features, labels = as_arrays(features, labels)
    # The maximised evidence is invariant to a global scale of F (alpha absorbs it), but the fixed point is not
    # in floating point: random-init backbones give features of ~1e-22. Unit RMS row norm keeps it well posed.
    scale = np.sqrt(np.mean(np.sum(features ** 2, axis=1)))
    spectrum = Spectrum.of(features / scale if scale > 0 else features)
    evidences = []
    for label in np.unique(labels):
        target = (labels == label).astype(np.float64)
        alpha, beta = maximise_evidence(spectrum, target)
        evidences.append(log_evidence(spectrum, target, alpha, beta) / spectrum.n)
    return float(np.mean(evidences))
