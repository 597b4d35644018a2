"""Extra metrics from Hugging Face ``evaluate`` (``evaluation.extra_metrics``), next to the built-in ones.

``evaluate.load`` imports the metric's Python script, from the Hub (the ``evaluate-metric/<name>`` Space) or from a
local folder: like ``trust_remote_code``, an extra metric is code the recipe chooses to run (evaluate 0.4 has no
flag to refuse it). Loading happens in pre-flight, so that a metric that cannot load (offline, a wrong path, a
missing dependency of its script) stops the run before training, with one line saying how to fix it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config_utils import short
from ..errors import RecipeError
from ..recipe import ExtraMetric
from .metrics import HEADLINE

logger = logging.getLogger(__name__)

FIELD = "evaluation.extra_metrics"
#: Keys of a split's report that the built-in evaluation writes; no extra metric may take one of them.
BUILT_IN_KEYS = frozenset((*HEADLINE, "num_samples", "rows", "per_class", "confusion_matrix", "loss"))


def flatten(name: str, result: Any) -> dict[str, float]:
    """A metric's result as numbers: one number is ``name``, several are ``name_<key>``; other values are dropped."""
    if not isinstance(result, dict):
        result = {name: result}
    numbers = {key: float(value) for key, value in result.items()
               if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))}
    if len(numbers) == 1:
        return {name: next(iter(numbers.values()))}
    return {f"{name}_{key}": value for key, value in numbers.items()}


@dataclass(frozen=True)
class LoadedMetric:
    """An ``evaluate`` metric ready to compute, with the recipe's name and ``compute`` arguments."""

    name: str
    module: Any
    """The ``evaluate.EvaluationModule``."""
    args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    """What was loaded: the recipe's ``path``, else its ``name``."""

    def compute(self, labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        result = self.module.compute(predictions=np.asarray(predictions).tolist(),
                                     references=np.asarray(labels).tolist(), **self.args)
        return flatten(self.name, result)


@dataclass(frozen=True)
class ExtraMetricSet:
    """The recipe's extra metrics, loaded; empty when the recipe names none."""

    metrics: tuple[LoadedMetric, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.metrics)

    def check(self, num_labels: int) -> None:
        """Compute each metric once on a few made-up predictions over ``num_labels`` classes: wrong ``args``, a
        result without numbers or a key of the built-in report show before training, not after it."""
        labels = np.tile(np.arange(num_labels), 2)
        predictions = np.concatenate([np.roll(labels[:num_labels], 1), labels[:num_labels]])
        seen: dict[str, str] = {}
        for metric in self.metrics:
            try:
                keys = metric.compute(labels, predictions)
            except Exception as error:  # whatever the metric's own script raises
                raise RecipeError(f"'{FIELD}': '{metric.name}' fails on a trial computation with args "
                                  f"{short(metric.args, 80)} ({_reason(error)}); fix or remove its args.") from None
            if not keys:
                raise RecipeError(f"'{FIELD}': '{metric.name}' returns no number; hf-transfer records numbers only.")
            for key in keys:
                if key in BUILT_IN_KEYS or key in seen:
                    owner = "the built-in evaluation" if key in BUILT_IN_KEYS else f"'{seen[key]}'"
                    raise RecipeError(f"'{FIELD}': '{metric.name}' would write '{key}', which {owner} writes; "
                                      f"give it another name, e.g. {{name: my_{metric.name}, path: {metric.source}}}.")
                seen[key] = metric.name

    def add_to(self, report: dict[str, Any], labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
        """``report`` with every extra metric added; built-in keys are never replaced, and a metric that fails
        on the real predictions is logged and left out (training is over; its model is still worth keeping)."""
        for metric in self.metrics:
            try:
                values = metric.compute(labels, predictions)
            except Exception as error:
                logger.warning("%s: '%s' failed and is left out of metrics.json: %s", FIELD, metric.name,
                               _reason(error))
                continue
            for key, value in values.items():
                if key in report:
                    logger.warning("%s: '%s' would replace '%s' in metrics.json; kept the existing value.", FIELD,
                                   metric.name, key)
                    continue
                report[key] = value
        return report


def load_extra_metrics(specs: Sequence[ExtraMetric]) -> ExtraMetricSet:
    """Load every metric of ``evaluation.extra_metrics``; one that cannot load is a ``RecipeError``."""
    for spec in specs:
        if spec.name in BUILT_IN_KEYS:
            raise RecipeError(f"'{FIELD}': '{spec.name}' is already in metrics.json (built in, computed with "
                              f"scikit-learn); remove it, or give it another name, e.g. {{name: my_{spec.name}, path: "
                              f"{spec.path or spec.name}}}.")
    return ExtraMetricSet(tuple(_load(spec) for spec in specs))


def _load(spec: ExtraMetric) -> LoadedMetric:
    from huggingface_hub import constants

    import evaluate  # imported only by recipes that name extra metrics: it takes seconds (datasets, pandas)
    from datasets import DownloadConfig

    source = spec.path or spec.name
    local = Path(source).expanduser()
    # evaluate.load's own rule: an existing file or folder is local, a relative "name" or "owner/name" is a Hub id.
    from_hub = not local.exists() and not local.is_absolute() and source.count("/") <= 1 \
        and not source.startswith(".") and not source.endswith(".py")
    if not local.exists() and not from_hub:
        raise RecipeError(f"'{FIELD}': cannot load '{spec.name}' (no such file or folder: {_cut(str(local))}): give "
                          "path as a metric folder holding <folder name>.py, or the .py file itself.")
    offline = constants.is_offline_mode()
    try:
        module = evaluate.load(source if from_hub else str(local), keep_in_memory=True,
                               download_config=DownloadConfig(local_files_only=True) if offline else None)
    except Exception as error:  # a missing script, no network, or whatever the script raises on import
        if not from_hub:
            raise RecipeError(f"'{FIELD}': cannot load '{spec.name}' from {_cut(str(local))} ({_reason(error)}): fix "
                              "the metric's script (a folder holding <folder name>.py that defines an "
                              "evaluate.Metric).") from None
        if offline:
            reason = "HF_HUB_OFFLINE is set and no copy is cached"
        elif isinstance(error, (FileNotFoundError, ConnectionError)):  # evaluate reports both as "doesn't exist"
            reason = f"the Hub has no {source if '/' in source else 'evaluate-metric/' + source} or cannot be reached"
        else:
            reason = _reason(error)
        if spec.path is not None:
            reason += f"; no local folder '{_cut(source)}' either"
        where = "run online" if offline else "check the name (https://huggingface.co/evaluate-metric)"
        raise RecipeError(f"'{FIELD}': cannot load '{spec.name}' ({reason}): point at a local copy with "
                          f"{{name: {spec.name}, path: /path/to/metric/folder}} or {where}.") from None
    return LoadedMetric(name=spec.name, module=module, args=dict(spec.args), source=source)


def _cut(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(error: BaseException) -> str:
    """The first line of a library's message, short, with its type."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {_cut(lines[0])}" if lines else type(error).__name__
