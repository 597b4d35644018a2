"""k-fold cross-validation and learning curves: the folds and subsets, then tiny end-to-end runs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from hf_transfer import Recipe, finetune
from hf_transfer.errors import RecipeError
from hf_transfer.runs.cross_validation import fold_indices, summarise
from hf_transfer.runs.learning_curve import fraction_indices

LABELS = [0] * 30 + [1] * 20 + [2] * 10


def test_folds_are_disjoint_cover_everything_and_keep_class_proportions():
    folds = fold_indices(LABELS, 5, seed=3)
    held = [set(h) for _, h in folds]
    assert sum(len(h) for h in held) == len(LABELS) and set().union(*held) == set(range(len(LABELS)))
    for (train, held_out) in folds:
        assert not set(train) & set(held_out)
        assert Counter(LABELS[i] for i in held_out) == {0: 6, 1: 4, 2: 2}
    assert fold_indices(LABELS, 5, seed=3) == folds and fold_indices(LABELS, 5, seed=4) != folds


def test_too_few_examples_of_a_class_for_k_names_the_field():
    with pytest.raises(RecipeError, match="'evaluation.cross_validate' = 11 needs at least 11 examples"):
        fold_indices(LABELS, 11, seed=0)


def test_summary_has_mean_and_sample_std_of_every_scalar_but_per_class_rows():
    folds = [{"test": {"accuracy": a, "per_class": {"x": {"f1": 1.0}}, "confusion_matrix": [[1]]},
              "train": {"runtime_s": 2.0}, "labels": ["x"]} for a in (0.5, 0.7, 0.9)]
    summary = summarise(folds)
    assert set(summary) == {"test.accuracy", "train.runtime_s"}
    assert summary["test.accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["test.accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))


@pytest.mark.parametrize(("fraction", "size"), [(0.01, 3), (0.1, 6), (0.5, 30), (1.0, 60)])
def test_learning_curve_fractions_are_stratified_subsets(fraction, size):
    chosen = fraction_indices(LABELS, fraction, seed=0)
    assert len(chosen) == len(set(chosen)) == size
    counts = Counter(LABELS[i] for i in chosen)
    assert counts[0] >= counts[1] >= counts[2] and set(counts) == {0, 1, 2}  # every label, even at 1 %
    assert counts[0] == round(size / 2) if size >= 6 else counts[0] == 1


@pytest.mark.parametrize("values", [{"cross_validate": 1}, {"learning_curve": [0.0, 0.5]}, {"learning_curve": [1.5]}])
def test_bad_protocol_settings_name_the_field(tiny_timm_dir, image_folder_data, values):
    key = next(iter(values))
    with pytest.raises(RecipeError, match=f"'evaluation.{key}'"):
        Recipe.from_dict({"task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
                          "data": {"path": str(image_folder_data)}, "evaluation": values})


def test_cross_validation_and_learning_curve_run_end_to_end(tiny_timm_dir, image_folder_data, tmp_path):
    out = tmp_path / "run"
    recipe = Recipe.from_dict({
        "task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
        "data": {"path": str(image_folder_data), "image_size": 32, "augmentation": {"random_resized_crop": False}},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "dataloader_num_workers": 0,
                     "disable_tqdm": True},
        "evaluation": {"cross_validate": 2, "learning_curve": [0.5, 1.0]}, "output": {"dir": str(out)}})
    result = finetune(recipe)
    metrics = json.loads((out / "metrics.json").read_text())
    cv = metrics["cross_validation"]
    assert cv["k"] == 2 and sorted(f["validation"] for f in cv["folds"]) == [19, 20]  # 36 train + 3 validation
    fold_accuracies = [json.loads((out / "folds" / str(i) / "metrics.json").read_text())["test"]["accuracy"]
                       for i in range(2)]
    assert cv["metrics"]["test.accuracy"]["values"] == pytest.approx(fold_accuracies)
    curve = metrics["learning_curve"]
    assert [row["train_samples"] for row in curve["rows"]] == [18, 36]
    assert curve["rows"][1]["pretrained"]["accuracy"] == metrics["test"]["accuracy"]  # the run itself
    for name in ("0.5/pretrained", "0.5/scratch", "1/scratch"):
        assert (out / "learning_curve" / name / "metrics.json").is_file(), name
    assert not (out / "learning_curve" / "1" / "pretrained").exists()
    assert (out / "learning_curve.png").stat().st_size > 0
    card = (out / "README.md").read_text()
    assert "### Cross-validation" in card and "### Learning curve" in card and "±" in card
    assert result.output_dir == out and Recipe.from_yaml(out / "recipe.yaml").evaluation.cross_validate == 2
