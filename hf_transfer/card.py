"""The model card: Hub metadata (with ``model-index``) and a readable body, from ``model_cards/``.

Rendered through ``huggingface_hub.ModelCard`` so that the YAML metadata is exactly what the Hub
validates and displays. Only values that name something on the Hub go into the metadata; local
folders are described in the body by their folder name only (never a path of the machine that trained).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import yaml

from .evaluation.extra import BUILT_IN_KEYS
from .registry import PYPI_WEIGHTS
from .tasks.base import CardFacts
from .transferability.ranking import Ranking
from .transferability.report import markdown_table, summary

#: ``hf_transfer/model_cards`` links to the repository's ``model_cards/`` so that wheels carry the template too.
TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "model_card.md"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Headline metrics, report key -> (Hub metric type, name shown on the Hub and in the body, ``args``). The metric
#: types are Hub metric ids (``accuracy``, ``f1``, ``precision``, ``recall``); the average goes into the name and args.
HEADLINE_METRICS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "accuracy": ("accuracy", "Accuracy", None),
    "precision_macro": ("precision", "Precision (macro)", {"average": "macro"}),
    "recall_macro": ("recall", "Recall (macro)", {"average": "macro"}),
    "f1_macro": ("f1", "F1 (macro)", {"average": "macro"}),
    "f1_weighted": ("f1", "F1 (weighted)", {"average": "weighted"}),
}
#: The body's names of the headline metrics (lower-case accuracy, as in the tables).
HEADLINE_NAMES = {"accuracy": "accuracy", "precision_macro": "precision (macro)", "recall_macro": "recall (macro)",
                  "f1_macro": "F1 (macro)", "f1_weighted": "F1 (weighted)"}
#: Figures the run writes next to the card, embedded when present: file -> caption.
RUN_PLOTS = {"confusion_matrix.png": "Confusion matrix (rows: true class, colour: share of the true class)",
             "learning_curves.png": "Loss and validation accuracy during training"}
#: Libraries whose versions the card lists (when installed); timm only for models that use it.
FRAMEWORKS = ("hf-transfer", "transformers", "torch", "timm", "datasets", "tokenizers", "accelerate")


@dataclass
class CardInputs:
    """Everything the card shows; built from the recipe, the prepared data and the metrics."""

    model_name: str
    task: str
    base_model: str | list[str] | None
    """What the recipe started from (Hub id, local folder, ``pypi:`` name), a list for a model with several towers;
    None when trained from scratch."""
    datasets: list[str]
    label_names: list[str]
    strategy: str
    strategy_options: dict[str, Any]
    hyperparameters: dict[str, Any]
    data_summary: dict[str, Any]
    metrics: dict[str, Any]
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    recipe_yaml: str = ""
    repo_id: str | None = None
    """Where the model lives on the Hub, if pushed."""
    facts: CardFacts | None = None
    """What the task adapter says (pipeline tag, library, input, "how to use"); ``None``: only the task name."""

    def task_facts(self) -> CardFacts:
        return self.facts or CardFacts(pipeline_tag=self.task, tags=(self.task,))

    @property
    def base_models(self) -> list[str]:
        if not self.base_model:
            return []
        return [self.base_model] if isinstance(self.base_model, str) else list(self.base_model)


def hub_id(name: str | None) -> str | None:
    """The Hub id ``name`` refers to, or None for local paths and names the Hub does not know."""
    if not name:
        return None
    if name.startswith("pypi:"):
        entry = PYPI_WEIGHTS.get(name)
        return entry.hub_id if entry else None
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    return name if _HUB_ID.match(name) else None


_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]+):(.*)$")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")


def _is_local_path(value: str) -> bool:
    """Whether ``value`` names a file or folder of this machine rather than a Hub id or a bare name."""
    if value in (".", "..") or value.startswith(("/", "~", "./", "../", "\\")) or _WINDOWS_PATH.match(value):
        return True
    if "\\" in value:
        return True
    if "/" not in value:
        return False  # a bare name ("data", "resnet18") shows the same either way
    if Path(value).expanduser().exists():
        return True
    return not _HUB_ID.match(value)  # "a/b/c": a path; "user/name": a Hub id


def display_name(value: Any) -> Any:
    """What the card shows for a reference: Hub ids, ``pypi:``/``sklearn:`` names and URLs unchanged, a local
    path as its last component only (``../shared/data/sst2`` -> ``sst2``); ``random:<path>`` keeps its prefix."""
    if not isinstance(value, str) or not value or "://" in value:
        return value
    scheme = None if _WINDOWS_PATH.match(value) else _SCHEME.match(value)
    if scheme:
        prefix, rest = scheme.groups()
        return f"{prefix}:{display_name(rest)}" if rest else value
    if not _is_local_path(value):
        return value
    path = Path(value.replace("\\", "/")).expanduser()
    return path.name or path.resolve().name or value


def _scrub_paths(value: Any, keys: tuple[str, ...] = ()) -> Any:
    """``value`` (a parsed recipe) with every local path replaced by its folder or file name."""
    if isinstance(value, dict):
        return {key: _scrub_paths(item, (*keys, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_paths(item, keys) for item in value]
    if isinstance(value, str) and keys[-2:] == ("output", "dir"):
        return Path(value.replace("\\", "/")).name or value  # a run folder, even when it looks like "runs/x"
    return display_name(value)


def public_recipe_yaml(recipe_yaml: str) -> str:
    """The resolved recipe for the card, local paths shortened to folder names ('' when it is not YAML)."""
    try:
        recipe = yaml.safe_load(recipe_yaml)
    except yaml.YAMLError:
        return ""
    if not isinstance(recipe, dict):
        return ""
    return yaml.safe_dump(_scrub_paths(recipe), sort_keys=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    """An enum's value (``SchedulerType.COSINE`` -> ``cosine``), also when it arrives as its repr string."""
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, str):
        match = re.fullmatch(r"[A-Z][A-Za-z0-9]*\.([A-Z][A-Z0-9_]*)", value)
        return match.group(1).lower() if match else value
    return value


def hyperparameter_rows(hyperparameters: dict[str, Any], steps: Any = None) -> list[tuple[str, Any]]:
    """(name, value) rows of the hyperparameter table: enums by value, floats short, and ``warmup_steps`` as
    steps or, below 1 (transformers reads it as a share of the training steps), as a warmup ratio."""
    rows: list[tuple[str, Any]] = []
    for name, value in hyperparameters.items():
        value = _plain(value)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in ("warmup_steps", "warmup_ratio") and number:
            if value <= 0:
                rows.append(("warmup", "none"))
            elif value < 1 or name == "warmup_ratio":
                total = steps if isinstance(steps, int) and steps > 0 else None
                of = f" ({math.ceil(value * total)} of {total} optimizer steps)" if total else " of the training steps"
                rows.append(("warmup", f"ratio {value:g}{of}"))
            else:
                rows.append(("warmup", f"{int(value)} steps"))
            continue
        rows.append((name, f"{value:g}" if isinstance(value, float) else value))
    return rows


def project_url() -> str | None:
    """hf-transfer's home page as its package metadata gives it; None when it gives none."""
    try:
        meta = package_metadata.metadata("hf-transfer")
    except package_metadata.PackageNotFoundError:
        return None
    urls = [entry.partition(",")[2].strip() for entry in meta.get_all("Project-URL") or []]
    urls.append((meta.get("Home-page") or "").strip())
    return next((url for url in urls if url.startswith(("https://", "http://"))), None)


def framework_versions(facts: CardFacts) -> list[tuple[str, str]]:
    """(library, version) of the installed libraries the model was trained with."""
    uses_timm = facts.library_name == "timm" or "timm" in facts.tags
    versions = []
    for name in FRAMEWORKS:
        if name == "timm" and not uses_timm:
            continue
        try:
            versions.append((name, package_metadata.version(name)))
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _points(value: float) -> str:
    return f"{value * 100:+.2f} pts"


def _metadata(inputs: CardInputs, split: str, report: dict[str, Any]):
    from huggingface_hub import EvalResult, ModelCardData

    bases = [b for b in (hub_id(b) for b in inputs.base_models) if b]
    base = (bases[0] if len(bases) == 1 else bases) or None
    datasets = [d for d in (hub_id(d) for d in [*inputs.datasets, _recipe_target(inputs.recipe_yaml)]) if d]
    dataset_type = datasets[0] if datasets else display_name(inputs.datasets[0]) if inputs.datasets else "unknown"
    eval_results = [
        EvalResult(task_type=inputs.task, dataset_type=dataset_type, dataset_name=dataset_type, dataset_split=split,
                   metric_type=metric_type, metric_name=name, metric_args=args, metric_value=round(report[key], 4))
        for key, (metric_type, name, args) in HEADLINE_METRICS.items() if key in report
    ] + [EvalResult(task_type=inputs.task, dataset_type=dataset_type, dataset_name=dataset_type, dataset_split=split,
                    metric_type=metric_type, metric_name=key, metric_args=args, metric_value=round(value, 4))
         for key, metric_type, args, value in extra_metric_rows(report, inputs.recipe_yaml)]
    eval_results += _target_results(inputs)
    facts = inputs.task_facts()
    tags = ["hf-transfer", "transfer-learning", inputs.strategy.replace("_", "-"), *facts.tags, *inputs.tags]
    metric_types = list(dict.fromkeys(metric_type for metric_type, _, _ in HEADLINE_METRICS.values()))
    return ModelCardData(
        license=inputs.license, library_name=facts.library_name, pipeline_tag=facts.pipeline_tag or None,
        base_model=base, datasets=datasets or None, metrics=metric_types,
        tags=list(dict.fromkeys(tags)), model_name=inputs.model_name, eval_results=eval_results)


def _scratch_rows(metrics: dict[str, Any], split: str) -> dict[str, str] | None:
    scratch = (metrics.get("scratch") or {}).get(split)
    if not scratch:
        return None
    ours = metrics[split]
    return {"pretrained_accuracy": _percent(ours["accuracy"]), "pretrained_f1": _percent(ours["f1_macro"]),
            "scratch_accuracy": _percent(scratch["accuracy"]), "scratch_f1": _percent(scratch["f1_macro"]),
            "gain_accuracy": _points(ours["accuracy"] - scratch["accuracy"]),
            "gain_f1": _points(ours["f1_macro"] - scratch["f1_macro"])}


def modality_rows(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``evaluation.compare_modalities``: each input alone and fused, and the fusion gain (fused minus the best
    single input), from ``metrics['compare_modalities']``."""
    table = metrics.get("compare_modalities")
    if not table:
        return None
    rows = [{"name": name, "accuracy": _percent(row["accuracy"]), "f1": _percent(row["f1_macro"])}
            for name, row in table["runs"].items()]
    gain = table["fusion_gain"]
    return {"split": table["split"], "rows": rows, "alone": [name for name in table["runs"] if name != "fused"],
            "gain_accuracy": _points(gain["accuracy"]), "gain_f1": _points(gain["f1_macro"])}


def extra_metric_rows(report: dict[str, Any], recipe_yaml: str) -> list[tuple[str, str, dict | None, float]]:
    """``evaluation.extra_metrics`` in a split's report: (key, metric name, compute args, value), one row per number
    (a metric with several numbers wrote ``<name>_<key>``); built-in keys are never one of them."""
    try:
        recipe = yaml.safe_load(recipe_yaml) or {}
    except yaml.YAMLError:
        return []
    evaluation = recipe.get("evaluation") if isinstance(recipe, dict) else None
    specs = [{"name": item} if isinstance(item, str) else item
             for item in ((evaluation or {}).get("extra_metrics") or []) if isinstance(item, (str, dict))]
    owners: dict[str, dict[str, Any]] = {}
    for spec in sorted(specs, key=lambda spec: -len(str(spec.get("name")))):  # "f1_x" claims "f1_x_y" before "f1"
        name = str(spec.get("name"))
        for key, value in report.items():
            if key not in BUILT_IN_KEYS and key not in owners and (key == name or key.startswith(f"{name}_")) \
                    and isinstance(value, (int, float)) and not isinstance(value, bool):
                owners[key] = spec
    return [(key, str(owners[key]["name"]), owners[key].get("args") or None, float(value))
            for key, value in report.items() if key in owners]


def _recipe_target(recipe_yaml: str) -> str | None:
    """The domain-adaptation target data (``method.target.path``) of the resolved recipe; None without one."""
    try:
        recipe = yaml.safe_load(recipe_yaml) or {}
    except yaml.YAMLError:
        return None
    method = recipe.get("method") if isinstance(recipe, dict) else None
    target = method.get("target") if isinstance(method, dict) else None
    path = target.get("path") if isinstance(target, dict) else None
    return str(path) if path else None


def target_split(metrics: dict[str, Any]) -> str | None:
    """The target domain's report in the metrics of a domain-adaptation run (test, else validation)."""
    return next((split for split in ("target_test", "target_validation") if split in metrics), None)


def _target_results(inputs: CardInputs) -> list:
    """``model-index`` results on the target domain's dataset, next to the source's."""
    from huggingface_hub import EvalResult

    split = target_split(inputs.metrics)
    if split is None:
        return []
    target = _recipe_target(inputs.recipe_yaml)
    dataset = hub_id(target) or display_name(target) or "target"
    report = inputs.metrics[split]
    return [EvalResult(task_type=inputs.task, dataset_type=dataset, dataset_name=f"{dataset} (target domain)",
                       dataset_split=split.removeprefix("target_"), metric_type=metric_type, metric_name=name,
                       metric_args=args, metric_value=round(report[key], 4))
            for key, (metric_type, name, args) in HEADLINE_METRICS.items() if key in report]


def statistics_note(adaptation: dict[str, Any]) -> str:
    """``batchnorm: per_domain``: which running statistics the saved model holds, and where the other domain's are."""
    saved, file = adaptation["saved_statistics"], adaptation.get("source_statistics_file")
    note = (f"BatchNorm running statistics are kept per domain: this model normalises with the {saved} domain's; the "
            f"source figures are measured with the source domain's, saved in `{file}` (load them with "
            f"`model.load_state_dict(safetensors.torch.load_file(\"{file}\"), strict=False)` to classify "
            "source-domain inputs).")
    plain = adaptation.get("target_with_source_statistics")
    if plain:
        note += f" With the source statistics the same weights score {_percent(plain['accuracy'])} on the target."
    return note


def domain_rows(inputs: CardInputs, split: str) -> dict[str, Any] | None:
    """Domain adaptation: source and target accuracy side by side, the source-only baseline and the adaptation
    gain when ``evaluation.compare_source_only`` trained it, and how the checkpoint was chosen."""
    metrics = inputs.metrics
    target = target_split(metrics)
    if target is None:
        return None

    def cell(report: dict[str, Any] | None) -> str:
        return f"{_percent(report['accuracy'])} ({_percent(report['f1_macro'])})" if report else "-"

    adaptation = metrics.get("domain_adaptation") or {}
    rows = [{"name": f"this model (`{adaptation.get('method', 'adapted')}`)", "source": cell(metrics.get(split)),
             "target": cell(metrics[target])}]
    gain = None
    baseline = metrics.get("source_only")
    if baseline:
        plain = baseline.get("target_with_source_statistics")  # per-domain statistics: the baseline without them
        if plain:
            rows.append({"name": "source only, source BatchNorm statistics (no adaptation)",
                         "source": cell(baseline.get(split)), "target": cell(plain)})
        rows.append({"name": "source only (same recipe, `adversarial_weight: 0`"
                             f"{', target BatchNorm statistics' if plain else ''})",
                     "source": cell(baseline.get(split)), "target": cell(baseline.get(target))})
        points = metrics.get("adaptation_gain") or {}
        gain = {domain: _points(points[domain]["accuracy"]) if domain in points else "-"
                for domain in ("source", "target")}
    notes = []
    if adaptation.get("selected_by"):
        notes.append(f"The checkpoint kept is the one with {adaptation['selected_by']}.")
    if adaptation.get("adversarial_warmup_steps"):
        notes.append(f"The adversarial term was off for the first {adaptation['adversarial_warmup_steps']} optimizer "
                     "steps, then ramped up.")
    if adaptation.get("saved_statistics"):
        notes.append(statistics_note(adaptation))
    if adaptation.get("lr_schedule") == "dann":
        notes.append(f"Learning rates followed DANN's annealing mu_0 / (1 + {adaptation.get('lr_alpha', 10):g} p)"
                     f"^{adaptation.get('lr_beta', 0.75):g} over training progress p.")
    return {"source_name": display_name(inputs.datasets[0]) if inputs.datasets else "source",
            "target_name": display_name(_recipe_target(inputs.recipe_yaml)) or "target",
            "source_split": split, "target_split": target.removeprefix("target_"),
            "target_samples": metrics[target].get("num_samples", "?"), "rows": rows, "gain": gain,
            "notes": " ".join(notes)}


def _recipe_data(recipe_yaml: str) -> dict[str, Any]:
    """The resolved recipe's ``data`` section ({} when the YAML is not a recipe)."""
    try:
        recipe = yaml.safe_load(recipe_yaml) or {}
    except yaml.YAMLError:
        return {}
    data = recipe.get("data") if isinstance(recipe, dict) else None
    return data if isinstance(data, dict) else {}


def missing_text(metrics: dict[str, Any], data_section: dict[str, Any]) -> str | None:
    """``metrics['missing_inputs']`` ({split: {input: rows}}) in words, with what ``data.missing_modality`` did."""
    missing = metrics.get("missing_inputs")
    if not missing:
        return None
    parts = []
    for split, counts in missing.items():
        without = ", ".join(f"{count} without {role}" for role, count in counts.items() if count)
        if without:
            parts.append(f"{split}: {without}")
    if not parts:
        return None
    handling = {"skip": "dropped", "learn": "kept, the model using a learned stand-in for the missing input"}
    mode = data_section.get("missing_modality")
    how = f"`data.missing_modality: {mode}`: {handling[mode]}" if mode in handling else "`data.missing_modality`"
    return "; ".join(parts) + f" ({how})"


def unlabelled_text(metrics: dict[str, Any]) -> str:
    """``metrics['unlabelled']`` (distillation on unlabelled data) in words, to follow the splits; "" without."""
    unlabelled = metrics.get("unlabelled")
    if not unlabelled:
        return ""
    return (f"; plus {unlabelled['examples']:,} unlabelled examples, learnt from the teacher's soft outputs alone "
            f"(distillation loss, no labels; {unlabelled.get('passes', 0):g} passes)")


def class_weights_text(metrics: dict[str, Any], data_section: dict[str, Any]) -> str | None:
    """``metrics['train']['class_weights']`` ({label: weight}) in words; None when training was unweighted."""
    weights = (metrics.get("train") or {}).get("class_weights")
    if not weights:
        return None
    listed = ", ".join(f"{name} {weight:.4g}" for name, weight in list(weights.items())[:20])
    listed += " ..." if len(weights) > 20 else ""
    source = ("balanced: train examples / (classes x examples of the class)"
              if data_section.get("class_weights") == "balanced" else "from the recipe")
    return (f"{listed} ({source}); the training loss is the class-weighted cross-entropy, the evaluation loss the "
            "unweighted one")


def protocol_rows(metrics: dict[str, Any]) -> dict[str, Any]:
    """Template values for stages (lineage, forgetting), cross-validation and learning curves, when present."""
    lineage = []
    for entry in metrics.get("stages", []):
        split = "test" if "test" in entry["metrics"] else "validation"
        lineage.append({"stage": entry["stage"], "data": display_name(entry["data"]),
                        "started_from": display_name(entry["started_from"]),
                        "accuracy": _percent(entry["metrics"][split]["accuracy"]), "split": split})
    forgetting = metrics.get("forgetting")
    if forgetting:
        forgetting = {**forgetting, "before": _percent(forgetting["accuracy_before"]),
                      "after": _percent(forgetting["accuracy_after"]), "change": _points(forgetting["accuracy_change"])}
    folds = metrics.get("cross_validation")
    cv_rows = [] if not folds else [
        (f"{name.split('.')[0]} {HEADLINE_NAMES[name.split('.')[-1]]}", f"{row['mean']:.4f} ± {row['std']:.4f}")
        for name, row in folds["metrics"].items()
        if name.split(".")[0] in ("validation", "test") and name.split(".")[-1] in HEADLINE_NAMES]
    curve = metrics.get("learning_curve")
    curve_rows = [] if not curve else [
        {"fraction": f"{row['fraction']:g}", "train_samples": row["train_samples"],
         "pretrained": _percent(row["pretrained"]["accuracy"]), "scratch": _percent(row["scratch"]["accuracy"]),
         "gain": _points(row["gain_accuracy"])} for row in curve["rows"]]
    return {"lineage": lineage, "forgetting": forgetting, "cv": folds, "cv_rows": cv_rows,
            "curve": curve, "curve_rows": curve_rows}


def selection_rows(metrics: dict[str, Any]) -> dict[str, str] | None:
    """``model.name_or_path: auto``: the candidates' transferability table (``metrics['backbone_selection']``),
    local candidates and data by folder name."""
    if not metrics.get("backbone_selection"):
        return None
    ranking = Ranking.from_dict(metrics["backbone_selection"])
    ranking = dataclasses.replace(ranking, data=display_name(ranking.data), results=[
        dataclasses.replace(result, candidate=display_name(result.candidate)) for result in ranking.results])
    return {"summary": summary(ranking), "table": markdown_table(ranking)}


def _strategy_text(options: dict[str, Any]) -> str:
    settings = {k: v for k, v in options.items() if k != "name" and v is not None}
    return "(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")" if settings else ""


def run_plots(inputs: CardInputs, folder: Path | None) -> list[tuple[str, str]]:
    """(file, caption) of the run's figures to embed: those in ``folder``; without a folder, the confusion matrix
    (every run writes it) and the learning curves when ``data_summary['has_learning_curves_png']`` says so."""
    if folder is not None:
        present = {name for name in RUN_PLOTS if (Path(folder) / name).is_file()}
    else:
        present = {"confusion_matrix.png"} if inputs.data_summary.get("has_confusion_matrix_png", True) else set()
        if inputs.data_summary.get("has_learning_curves_png"):
            present.add("learning_curves.png")
    return [(name, caption) for name, caption in RUN_PLOTS.items() if name in present]


def render_model_card(inputs: CardInputs, folder: Path | None = None):
    """A ``huggingface_hub.ModelCard`` for ``inputs`` (not yet written anywhere); ``folder``: where the run's
    figures are, to embed those that exist."""
    from huggingface_hub import ModelCard

    metrics = inputs.metrics
    split = "test" if "test" in metrics else "validation"
    report = metrics[split]
    summary = inputs.data_summary
    train = metrics.get("train", {})
    described = []
    for base in inputs.base_models:
        text = f"`{display_name(base)}`"
        base_hub = hub_id(base)
        if base_hub and base_hub != base:
            text += f" (the weights of [{base_hub}](https://huggingface.co/{base_hub}))"
        described.append(text)
    base_text = " and ".join(described) or "none (trained from random initialisation)"
    facts = inputs.task_facts()
    splits = summary.get("splits", {})
    data_section = _recipe_data(inputs.recipe_yaml)
    split_text = ", ".join(f"{name} {summary[name]} examples" + (f" ({splits[name]})" if name in splits else "")
                           for name in ("train", "validation", "test") if name in summary)
    split_text += unlabelled_text(metrics)
    return ModelCard.from_template(
        _metadata(inputs, split, report), template_path=str(TEMPLATE),
        model_name=inputs.model_name,
        summary=(f"{'An' if inputs.task[0] in 'aeiou' else 'A'} {inputs.task.replace('-', ' ')} model for {len(inputs.label_names)} classes, adapted from "
                 f"{base_text} with the `{inputs.strategy}` transfer strategy of hf-transfer."),
        result_split=split, num_samples=report["num_samples"],
        headline=[(label, _percent(report[key])) for key, label in HEADLINE_NAMES.items()]
        + [(key, f"{value:.4f}") for key, _, _, value in extra_metric_rows(report, inputs.recipe_yaml)],
        scratch=_scratch_rows(metrics, split), modalities=modality_rows(metrics), strategy=inputs.strategy,
        domains=domain_rows(inputs, split),
        strategy_text=_strategy_text(inputs.strategy_options),
        per_class=[{"name": name, "precision": f"{row['precision']:.3f}", "recall": f"{row['recall']:.3f}",
                    "f1": f"{row['f1']:.3f}", "support": row["support"]} for name, row in report["per_class"].items()],
        plots=run_plots(inputs, folder),
        how_to_use=facts.how_to_use, base_model_text=base_text,
        dataset_text=", ".join(f"`{display_name(d)}`" for d in inputs.datasets) or "not recorded",
        split_text=split_text,
        num_labels=len(inputs.label_names), labels_text=", ".join(inputs.label_names[:50])
        + (" ..." if len(inputs.label_names) > 50 else ""),
        input_text=facts.input_text, missing_text=missing_text(metrics, data_section),
        class_weights_text=class_weights_text(metrics, data_section),
        hyperparameters=hyperparameter_rows(inputs.hyperparameters, train.get("steps")),
        runtime=f"{train.get('runtime_s', 0):.0f} s", steps=train.get("steps", "?"), epochs=_epochs(train.get("epochs")),
        recipe_yaml=public_recipe_yaml(inputs.recipe_yaml), selection=selection_rows(metrics),
        project_url=project_url(), frameworks=framework_versions(facts), **protocol_rows(metrics),
    )


def _epochs(value: Any) -> str:
    """``1 epoch``, ``2.5 epochs``, ``? epochs``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g} epoch" + ("" if value == 1 else "s")
    return "? epochs"


def write_model_card(inputs: CardInputs, directory: Path) -> Path:
    """Render and save ``README.md`` in ``directory``, embedding the figures already written there."""
    path = Path(directory) / "README.md"
    render_model_card(inputs, folder=Path(directory)).save(path)
    return path
