"""The scores on generated features: informative features and source heads must score higher than noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_transfer.transferability import SCORES, compute_score
from hf_transfer.transferability.logme import Spectrum, log_evidence, maximise_evidence

FEATURE_SCORES = [name for name, score in SCORES.items() if not score.needs_source]
SOURCE_SCORES = [name for name, score in SCORES.items() if score.needs_source]


def test_registry_holds_the_four_methods_in_table_order():
    assert list(SCORES) == ["logme", "leep", "nce", "hscore"]
    assert all("20" in score.paper for score in SCORES.values())  # each docstring cites its paper and year


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    informative = 2.0 * np.eye(4)[labels] + rng.normal(size=(400, 4))
    separable = np.concatenate([informative, rng.normal(size=(400, 28))], axis=1)
    noise = rng.normal(size=(400, 32))
    return labels, separable, noise, rng.permutation(labels)


@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_separable_features_beat_noise_and_shuffled_labels(toy, name):
    labels, separable, noise, shuffled = toy
    good = compute_score(name, separable, labels)
    assert good > compute_score(name, noise, labels) + 0.05
    assert good > compute_score(name, separable, shuffled) + 0.05


@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_accepts_tensors_and_ignores_the_order_of_examples(toy, name):
    labels, separable, _, _ = toy
    order = np.random.default_rng(1).permutation(len(labels))
    as_numpy = compute_score(name, separable, labels)
    assert compute_score(name, torch.tensor(separable[order]), torch.tensor(labels[order])) == pytest.approx(as_numpy)


@pytest.mark.parametrize("scale", [1e-22, 1e6])
def test_logme_ignores_a_global_scale_of_the_features(toy, scale):
    labels, separable, _, _ = toy  # random-init backbones give features of ~1e-22: same evidence, in theory and here
    assert compute_score("logme", separable * scale, labels) == pytest.approx(compute_score("logme", separable, labels))


@pytest.mark.parametrize("shape", [(30, 8), (12, 40)])
def test_logme_evidence_is_the_gaussian_marginal_likelihood_at_its_maximum(shape):
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(2)
    features = rng.normal(size=shape)
    target = features @ rng.normal(size=shape[1]) + 0.5 * rng.normal(size=shape[0])  # an interior maximum
    spectrum = Spectrum.of(features)
    alpha, beta = maximise_evidence(spectrum, target)
    evidence = log_evidence(spectrum, target, alpha, beta)
    covariance = np.eye(shape[0]) / beta + features @ features.T / alpha  # t ~ N(0, I/beta + F F^T/alpha)
    assert evidence == pytest.approx(multivariate_normal(np.zeros(shape[0]), covariance).logpdf(target), rel=1e-8)
    for scale_alpha, scale_beta in [(1.5, 1), (0.6, 1), (1, 1.5), (1, 0.6)]:
        assert evidence >= log_evidence(spectrum, target, alpha * scale_alpha, beta * scale_beta) - 1e-6


@pytest.fixture(scope="module")
def source_heads():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=300)
    # 6 source classes; target class k is source class 2k or 2k+1 (predictions determine the target labels)
    source = 2 * labels + rng.integers(0, 2, size=300)
    informative = 0.85 * np.eye(6)[source] + 0.15 / 6
    random = rng.dirichlet(np.ones(6), size=300)
    return labels, informative, random


@pytest.mark.parametrize("name", SOURCE_SCORES)
def test_a_source_head_that_determines_the_labels_beats_a_random_one(source_heads, name):
    labels, informative, random = source_heads
    assert compute_score(name, None, labels, informative) > compute_score(name, None, labels, random) + 0.3


@pytest.mark.parametrize("name", SOURCE_SCORES)
def test_scores_needing_a_source_head_are_none_without_one(toy, name):
    labels, separable, _, _ = toy
    assert compute_score(name, separable, labels, None) is None


def test_leep_matches_a_hand_computed_toy():
    labels = np.array([0, 0, 1])
    theta = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    # P(y, z) = 1/3 sum theta: y=0 -> [1.4, 0.6] / 3; y=1 -> [0.3, 0.7] / 3; P(z) = [1.7, 1.3] / 3
    p_given = np.array([[1.4 / 1.7, 0.6 / 1.3], [0.3 / 1.7, 0.7 / 1.3]])
    expected = np.mean([math.log(theta[i] @ p_given[labels[i]]) for i in range(3)])
    assert compute_score("leep", None, labels, theta) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(-0.5060, abs=1e-4)


def test_nce_is_minus_the_conditional_entropy_of_the_hard_predictions():
    labels = np.array([0, 0, 1, 1])
    theta = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])  # argmax z = 0, 1, 1, 1
    # z=0: {y=0}; z=1: {y=0, y=1, y=1} -> -H(Y|Z) = 3/4 * (1/3 log 1/3 + 2/3 log 2/3)
    expected = 0.75 * (1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert compute_score("nce", None, labels, theta) == pytest.approx(expected)
