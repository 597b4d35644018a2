"""``evaluation.compare_source_only``: a domain-adaptation run next to the same recipe without adaptation.

What domain adaptation buys is the target accuracy over a model trained on the source alone, and what it may
cost is source accuracy (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016, report both
sides). The baseline is the same recipe with ``method.adversarial_weight: 0`` (same data, budget, seed, schedule
and checkpoint selection), trained first in ``<output.dir>/source_only`` and reused when finished; then the run
itself, whose ``metrics.json`` gains ``source_only`` and ``adaptation_gain``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..data.prepare import PreparedData
from ..errors import RecipeError
from ..recipe import AUTO, Recipe
from ..training.run import ExtraMetrics, FinetuneResult, preflight_run
from .reuse import SUB_RUN, claimed_for, comparison, finished_metrics, run_or_reuse
from .scratch import run_compared

logger = logging.getLogger(__name__)

SOURCE_ONLY = "source_only"
#: Sections of the baseline's metrics copied into the run's own ``metrics.json``.
COMPARED = ("validation", "test", "target_validation", "target_test")
HEADLINE = ("accuracy", "f1_macro")


def source_only_recipe(recipe: Recipe, root: Path) -> Recipe:
    """The baseline in ``root/source_only``: the adversarial term off, nothing pushed, no comparison of its own.

    A one-line ``RecipeError`` when the recipe has no adversarial term to turn off.
    """
    weight = getattr(recipe.method.options, "adversarial_weight", None)
    if weight is None:
        raise RecipeError(f"'evaluation.compare_source_only' compares a domain-adaptation method with its source-only "
                          f"baseline; 'method' is {recipe.method.name or 'not set'}: use method.name: dann, or "
                          "remove evaluation.compare_source_only.")
    if not weight:
        raise RecipeError("'evaluation.compare_source_only' trains the recipe with method.adversarial_weight: 0, "
                          "which this recipe already has: set a weight > 0 or remove the comparison.")
    if recipe.model.name_or_path == AUTO or recipe.stages:
        raise RecipeError("'evaluation.compare_source_only' does not combine with model.name_or_path: auto or "
                          "stages yet: run the comparison as its own recipe.")
    return recipe.replace({**SUB_RUN, "method.adversarial_weight": 0, "evaluation.compare_source_only": False,
                           "output.dir": str(root / SOURCE_ONLY)})


def _split(metrics: dict[str, Any], baseline: dict[str, Any], names: tuple[str, str]) -> str | None:
    return next((name for name in names if name in metrics and name in baseline), None)


def adaptation_gain(metrics: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Adapted minus source-only, on the source's and the target's test split (else validation)."""
    gain: dict[str, Any] = {}
    for domain, names in (("source", ("test", "validation")), ("target", ("target_test", "target_validation"))):
        split = _split(metrics, baseline, names)
        if split is not None:
            gain[domain] = {"split": split, **{key: round(metrics[split][key] - baseline[split][key], 6)
                                               for key in HEADLINE}}
    return gain


def baseline_report(reference: dict[str, Any]) -> dict[str, Any]:
    """The baseline's splits; with per-domain BatchNorm statistics also its target score with the source's (the
    model with no adaptation at all, as target statistics alone are an adaptation: AdaBN)."""
    report = {key: reference[key] for key in COMPARED if key in reference}
    plain = (reference.get("domain_adaptation") or {}).get("target_with_source_statistics")
    if plain:
        report["target_with_source_statistics"] = plain
    return report


def run_source_only(recipe: Recipe, write_card: bool = True, extra_metrics: ExtraMetrics | None = None,
                    data: PreparedData | None = None) -> FinetuneResult:
    """The source-only baseline first (reused when finished), then the adapted run with the comparison."""
    baseline = source_only_recipe(recipe, Path(recipe.output.dir))
    folder, _ = preflight_run(recipe)
    with claimed_for(folder, recipe, SOURCE_ONLY):
        if finished_metrics(baseline.output.dir) is None:  # inside the claimed run: an overwritten one is set aside
            preflight_run(baseline)
            logger.info("Training the source-only baseline (evaluation.compare_source_only) in %s",
                        baseline.output.dir)
        reference = run_or_reuse(baseline, data)
        compared = comparison(lambda metrics: {
            "source_only": baseline_report(reference), "adaptation_gain": adaptation_gain(metrics, reference)},
            extra_metrics)
        return run_compared(recipe, write_card, extra_metrics=compared, data=data)
