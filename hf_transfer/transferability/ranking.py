"""Rank candidate backbones on a target data set by transferability scores of their frozen features.

Every candidate goes through the same loader, preprocessing and feature cache as training
(``task.load_model``, ``task.model_inputs``, ``hf_transfer.features``), so its scores describe exactly the
features a ``linear_probe`` run would see. The source head (e.g. the 1000 ImageNet classes) is kept as
saved, so that LEEP and NCE can read its predictions; a checkpoint without a classifier gets "n/a".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from ..data.prepare import LABEL, PreparedData, prepare_data, subset
from ..errors import DataError, ModelError, RecipeError
from ..features import (adapter_reproduces_model, backbone_digest, cached_features, extract_features, feature_key,
                        head_adapter_for, preprocessing_description)
from ..models.layout import discover_layout
from ..models.sources import resolve_model_source
from ..recipe import Recipe
from ..tasks.base import TaskAdapter, get_task
from .base import SCORES, compute_score

logger = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
"""``random:<reference>``: the architecture of ``<reference>`` with random weights (``model.pretrained: false``)."""


@dataclass(frozen=True)
class Candidate:
    """One entry of ``--candidates`` / ``model.candidates``: any model reference, optionally ``random:``."""

    spec: str
    reference: str
    pretrained: bool

    @classmethod
    def parse(cls, spec: str) -> "Candidate":
        spec = spec.strip()
        reference = spec.removeprefix(RANDOM_PREFIX)
        if not reference:
            raise RecipeError(f"Candidate '{spec}' names no model; write e.g. random:pypi:mobilenetv2_100.tv_in1k.")
        return cls(spec=spec, reference=reference, pretrained=not spec.startswith(RANDOM_PREFIX))

    def recipe(self, recipe: Recipe) -> Recipe:
        """``recipe`` training this candidate (``auto`` and its candidates resolved away)."""
        return recipe.replace({"model.name_or_path": self.reference, "model.pretrained": self.pretrained,
                               "model.candidates": None})


@dataclass
class CandidateResult:
    candidate: str
    scores: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)
    """Why a score is n/a."""
    seconds: float = 0.0
    feature_dim: int = 0
    source_classes: int | None = None
    cache_hit: bool = False
    rank: int | None = None
    tower: str | None = None
    """For a task with several towers: the tower (input) this candidate was scored for."""


@dataclass
class Ranking:
    """Scores of every candidate, best first by ``rank_by``."""

    results: list[CandidateResult]
    rank_by: str
    task: str
    data: str
    num_samples: int
    num_classes: int

    def best(self) -> CandidateResult:
        return self.results[0]

    def best_per_tower(self) -> dict[str, str]:
        """For a task with several towers: the best candidate of each tower."""
        best: dict[str, str] = {}
        for result in self.results:
            if result.tower is not None:
                best.setdefault(result.tower, result.candidate)
        return best

    def to_dict(self) -> dict[str, Any]:
        return {"rank_by": self.rank_by, "task": self.task, "data": self.data, "num_samples": self.num_samples,
                "num_classes": self.num_classes, "best": self.best().candidate,
                **({"best_per_tower": self.best_per_tower()} if self.best_per_tower() else {}),
                "scores": {name: score.paper for name, score in SCORES.items()},
                "results": [dataclasses.asdict(result) for result in self.results]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ranking":
        return cls(results=[CandidateResult(**row) for row in data["results"]], rank_by=data["rank_by"],
                   task=data["task"], data=data["data"], num_samples=data["num_samples"],
                   num_classes=data["num_classes"])


def order_results(results: list[CandidateResult], rank_by: str) -> list[CandidateResult]:
    """Best first; candidates without a value for ``rank_by`` last, unranked."""
    scored = sorted((r for r in results if r.scores.get(rank_by) is not None), key=lambda r: -r.scores[rank_by])
    if not scored:
        raise ModelError(f"No candidate has a '{rank_by}' score ({'; '.join(r.notes.get(rank_by, '') for r in results)});"
                         " rank by logme or hscore instead.")
    for position, result in enumerate(scored, start=1):
        result.rank = position
    return scored + [r for r in results if r.scores.get(rank_by) is None]


# ---------------------------------------------------------------------------------- the source head

def source_label_names(location: str) -> list[str] | None:
    """The label set of the saved head (timm ``label_names``/``num_classes``, or ``id2label``); whether its
    weights were saved too is ``missing_head_weights``'s question."""
    path = Path(location) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("label_names"):
        return [str(name) for name in config["label_names"]]
    if config.get("num_classes"):
        return [str(i) for i in range(config["num_classes"])]
    from transformers import AutoConfig

    loaded = AutoConfig.from_pretrained(location)  # transformers leaves default labels (LABEL_0, ...) unsaved
    return [str(loaded.id2label[i]) for i in range(loaded.num_labels)]


def missing_head_weights(location: str, head: tuple[str, ...]) -> list[str]:
    """Head parameters absent from the folder's safetensors (prefixes like ``timm_model.`` ignored)."""
    from safetensors import safe_open

    keys: set[str] = set()
    for file in Path(location).glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            keys.update(handle.keys())
    return [name for name in head if not any(name == key or name.endswith("." + key) for key in keys)]


# ------------------------------------------------------------------------------------------- one candidate

@dataclass
class CandidateFeatures:
    features: torch.Tensor
    source_probs: torch.Tensor | None
    no_source_reason: str | None
    source_classes: int | None
    cache_hit: bool


def candidate_features(candidate: Candidate, recipe: Recipe, data: PreparedData, split, seed: int) -> CandidateFeatures:
    """Frozen features of ``split`` (cached on disk) and the source head's probabilities on them."""
    task = get_task(recipe.task)
    run = candidate.recipe(recipe)
    source = resolve_model_source(candidate.reference, task)
    source_labels = source_label_names(source.location) if source.kind in ("local", "pypi") else None
    set_seed(seed)  # a random-init candidate gets the same weights, hence cached features, every time
    model, processor = task.load_model(run, source_labels or data.label_names)
    layout = discover_layout(model)
    reason = None
    if source_labels is None:
        reason = f"'{candidate.reference}' has no saved classifier config (no source label set)"
    elif missing := missing_head_weights(source.location, layout.head):
        reason = f"'{candidate.reference}' saves no classifier weights ({', '.join(missing[:2])}): no source head"
    only = dataclasses.replace(data, train=split, validation=split, test=None)
    inputs = task.model_inputs(run, only, model, processor)  # the validation slot: evaluation preprocessing
    adapter = head_adapter_for(model)
    probe = inputs.collator([inputs.validation[i] for i in range(min(2, len(split)))])
    if adapter is None or not adapter_reproduces_model(model, adapter, probe):
        raise ModelError(f"Candidate '{candidate.spec}': no head adapter splits {type(model).__name__} into "
                         "features and head, so its frozen features cannot be scored.")
    key = feature_key(adapter, backbone_digest(model, layout.head), split._fingerprint,
                      preprocessing_description(run, only, model, processor))
    batch_size = int(recipe.training.get("per_device_eval_batch_size", 64))
    features, hit = cached_features(key, lambda: extract_features(
        model, adapter, inputs.validation, inputs.collator, batch_size, description=candidate.spec))
    probs = None
    if reason is None:
        with torch.inference_mode():
            logits = adapter.logits(model, features.to(next(model.parameters()).device))
        probs = torch.softmax(logits.double().cpu(), dim=-1)
    return CandidateFeatures(features=features.flatten(1), source_probs=probs, no_source_reason=reason,
                             source_classes=len(source_labels) if source_labels else None, cache_hit=hit)


def score_candidate(candidate: Candidate, recipe: Recipe, data: PreparedData, split, seed: int) -> CandidateResult:
    started = time.perf_counter()
    extracted = candidate_features(candidate, recipe, data, split, seed)
    labels = np.asarray(split[LABEL])
    scores, notes = {}, {}
    for name, score in SCORES.items():
        scores[name] = compute_score(name, extracted.features, labels, extracted.source_probs)
        if scores[name] is None:
            notes[name] = extracted.no_source_reason or "no source head"
    return CandidateResult(candidate=candidate.spec, scores=scores, notes=notes,
                           seconds=round(time.perf_counter() - started, 2),
                           feature_dim=int(extracted.features.shape[1]), source_classes=extracted.source_classes,
                           cache_hit=extracted.cache_hit)


# ------------------------------------------------------------------------------------------------ ranking

def parse_candidates(specs: list[str] | None) -> list[Candidate]:
    candidates = [Candidate.parse(spec) for spec in specs or []]
    if len(candidates) < 1:
        raise RecipeError("No candidates: list at least one model (--candidates A B ... or model.candidates).")
    duplicates = sorted({c.spec for c in candidates if [d.spec for d in candidates].count(c.spec) > 1})
    if duplicates:
        raise RecipeError(f"Candidate(s) listed twice: {', '.join(duplicates)}.")
    return candidates


def check_candidates(candidates: list[Candidate], task: str | TaskAdapter) -> dict[str, str | None]:
    """Resolve every reference before any data is read or model loaded: a typo fails in a second.

    For a task with several towers, each candidate is scored for the first tower whose task accepts it (an image
    backbone on the image column, a text encoder on the text column); returns candidate -> tower.
    """
    adapter = get_task(task) if isinstance(task, str) else task
    towers = adapter.tower_tasks()
    placed: dict[str, str | None] = {}
    for candidate in candidates:
        if not towers:
            try:
                resolve_model_source(candidate.reference, adapter)
            except ModelError as error:
                raise ModelError(f"Candidate '{candidate.spec}': {error}") from None
            placed[candidate.spec] = None
            continue
        problems = []
        for tower, tower_task in towers.items():
            try:
                resolve_model_source(candidate.reference, tower_task, f"{tower} candidate")
            except ModelError as error:
                problems.append(str(error))
                continue
            placed[candidate.spec] = tower
            break
        else:
            raise ModelError(f"Candidate '{candidate.spec}' fits none of the towers ({', '.join(towers)}): "
                             + " / ".join(problems))
    return placed


def rank_candidates(recipe: Recipe, data: PreparedData | None = None, max_samples: int | None = None,
                    rank_by: str | None = None) -> Ranking:
    """Score ``recipe.model.candidates`` on its (prepared, subsampled) train split; best first."""
    candidates = parse_candidates(recipe.model.candidates)
    rank_by = rank_by or recipe.model.rank_by
    if rank_by not in SCORES:
        raise RecipeError(f"Unknown score '{rank_by}'; available: {', '.join(SCORES)}.")
    task = get_task(recipe.task)
    towers = check_candidates(candidates, task)
    seed = recipe.seed
    if data is None:
        data = prepare_data(recipe.data, task.input_roles, seed)
    split = subset(data.train, max_samples or recipe.model.rank_max_samples, seed)
    classes = len(set(split[LABEL]))
    if classes < 2:
        raise DataError(f"The {len(split)} examples scored hold a single class; rankings need at least two. "
                        "Raise --max-samples (model.rank_max_samples) or check 'data.label_column'.")
    logger.info("Ranking %d candidates on %d examples of %s (%d classes) by %s", len(candidates), len(split),
                recipe.data.path, classes, rank_by)
    results = []
    for number, candidate in enumerate(candidates, start=1):
        tower = towers[candidate.spec]
        scored = recipe if tower is None else recipe.replace(  # a tower is scored as its own task would be
            {"task": task.tower_tasks()[tower], "model.image": None, "model.text": None})
        result = score_candidate(candidate, scored, data, split, seed)
        result.tower = tower
        shown = ", ".join(f"{name} {value:.4f}" for name, value in result.scores.items() if value is not None)
        logger.info("[%d/%d] %s: %s (%.1f s, features %s)", number, len(candidates), candidate.spec, shown,
                    result.seconds, "cached" if result.cache_hit else "computed")
        results.append(result)
    return Ranking(results=order_results(results, rank_by), rank_by=rank_by, task=recipe.task,
                   data=recipe.data.path, num_samples=len(split), num_classes=classes)
