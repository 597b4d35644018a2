"""Seeded, stratified index selection."""

from __future__ import annotations

from collections import Counter

import pytest

from hf_transfer.data.sampling import per_class_indices, stratified_indices, stratified_split

LABELS = [0] * 60 + [1] * 30 + [2] * 10


def counts(indices, labels=LABELS) -> Counter:
    return Counter(labels[i] for i in indices)


def test_stratified_indices_keeps_class_proportions():
    chosen = stratified_indices(LABELS, 10, seed=0)
    assert len(chosen) == len(set(chosen)) == 10
    assert counts(chosen) == {0: 6, 1: 3, 2: 1}
    assert chosen == sorted(chosen)


def test_stratified_indices_largest_remainder_fills_exact_size():
    chosen = stratified_indices(LABELS, 7, seed=0)  # quotas 4.2, 2.1, 0.7
    assert len(chosen) == 7
    assert counts(chosen) == {0: 4, 1: 2, 2: 1}


def test_stratified_indices_seeded_and_deterministic():
    assert stratified_indices(LABELS, 20, seed=3) == stratified_indices(LABELS, 20, seed=3)
    assert stratified_indices(LABELS, 20, seed=3) != stratified_indices(LABELS, 20, seed=4)


def test_stratified_indices_with_size_beyond_total_returns_everything():
    assert stratified_indices(LABELS, 500, seed=0) == list(range(len(LABELS)))


def test_per_class_indices_caps_each_class():
    chosen = per_class_indices(LABELS, 5, seed=0)
    assert counts(chosen) == {0: 5, 1: 5, 2: 5}
    assert chosen == sorted(chosen)
    assert per_class_indices(LABELS, 5, seed=0) == chosen
    assert per_class_indices(LABELS, 5, seed=1) != chosen


def test_per_class_indices_keeps_small_classes_whole():
    labels = [0] * 20 + [1] * 2
    assert counts(per_class_indices(labels, 4, seed=0), labels) == {0: 4, 1: 2}


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_stratified_split_disjoint_and_complete(fraction):
    rest, held = stratified_split(LABELS, fraction, seed=0)
    assert set(rest).isdisjoint(held)
    assert sorted(rest + held) == list(range(len(LABELS)))
    assert counts(held) == {c: round(n * fraction) or 1 for c, n in Counter(LABELS).items()}


def test_stratified_split_holds_out_at_least_one_per_class_with_several_members():
    labels = [0] * 50 + [1] * 3 + [2] * 2 + [3]
    rest, held = stratified_split(labels, 0.1, seed=0)
    held_counts = counts(held, labels)
    assert held_counts[0] == 5
    assert held_counts[1] == 1 and held_counts[2] == 1
    assert held_counts[3] == 0  # a singleton class stays in train
    assert counts(rest, labels)[3] == 1


def test_stratified_split_seeded():
    assert stratified_split(LABELS, 0.2, seed=5) == stratified_split(LABELS, 0.2, seed=5)
    assert stratified_split(LABELS, 0.2, seed=5)[1] != stratified_split(LABELS, 0.2, seed=6)[1]



def test_every_class_keeps_rare_labels_in_small_subsets():
    labels = [0] * 90 + [1] * 5 + [2] * 5
    plain = [labels[i] for i in stratified_indices(labels, 10, seed=0)]
    assert sorted(set(plain)) != [0, 1, 2]  # proportional quotas give a 5 % class half an example
    chosen = stratified_indices(labels, 10, seed=0, every_class=True)
    picked = [labels[i] for i in chosen]
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert sorted(set(picked)) == [0, 1, 2] and picked.count(0) == 8
    # fewer rows than classes: the floor cannot apply, the size still holds
    assert len(stratified_indices(labels, 2, seed=0, every_class=True)) == 2
