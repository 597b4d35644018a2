"""``evaluation.extra_metrics``: Hugging Face ``evaluate`` metrics loaded before training (a local metric folder
here; the Hub is offline in tests), computed on every evaluated split next to the scikit-learn built-ins, written
to ``metrics.json`` and the card's ``model-index``; one that cannot load stops the run before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import matthews_corrcoef

from hf_transfer import Recipe, finetune
from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from hf_transfer.evaluation.extra import flatten, load_extra_metrics

#: A copy of evaluate's matthews_correlation (scikit-learn inside), under another name, as users keep one offline.
MCC_SCRIPT = '''
import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef


class MccCopy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="Matthews correlation", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int32"),
                                                               "references": datasets.Value("int32")}))

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions,
                                                                sample_weight=sample_weight))}
'''
#: Several numbers and a string: numbers become ``<name>_<key>``, the string is left out.
RATES_SCRIPT = '''
import datasets
import evaluate


class Rates(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="hit and miss rates", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        hits = sum(p == r for p, r in zip(predictions, references)) / len(references)
        return {"hit": hits, "miss": 1 - hits, "note": "rates of exact matches"}
'''


def metric_folder(root: Path, name: str, script: str) -> Path:
    """``root/<name>/<name>.py``: the layout ``evaluate.load(folder)`` expects."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(script, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def metrics_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metrics")
    metric_folder(root, "mcc_copy", MCC_SCRIPT)
    metric_folder(root, "rates", RATES_SCRIPT)
    return root


def text_recipe(model: Path, data: Path, out: Path, extra_metrics) -> dict:
    return {"task": "text-classification", "model": {"name_or_path": str(model)},
            "data": {"path": str(data), "max_length": 16},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "disable_tqdm": True},
            "evaluation": {"extra_metrics": extra_metrics}, "output": {"dir": str(out)}}


def predictions_from(matrix: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) with this confusion matrix (rows true, columns predicted)."""
    pairs = [(t, p) for t, row in enumerate(matrix) for p, count in enumerate(row) for _ in range(count)]
    return np.array([t for t, _ in pairs]), np.array([p for _, p in pairs])


def test_a_run_records_local_evaluate_metrics_for_validation_and_test(tiny_bert_dir, text_csv_data, metrics_root,
                                                                      tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "run"
    specs = [{"name": "mcc", "path": str(metrics_root / "mcc_copy")}, {"name": "rates", "path": str(metrics_root / "rates")}]
    result = finetune(Recipe.from_dict(text_recipe(tiny_bert_dir, text_csv_data, out, specs)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    for split in ("validation", "test"):
        report = metrics[split]
        labels, predictions = predictions_from(report["confusion_matrix"])
        assert report["mcc"] == pytest.approx(matthews_corrcoef(labels, predictions))
        assert report["rates_hit"] == pytest.approx(report["accuracy"])  # the built-in, untouched
        assert report["rates_miss"] == pytest.approx(1 - report["accuracy"])
        assert "rates_note" not in report and "rates" not in report
    card = ModelCard.load(out / "README.md")
    found = {(r.dataset_split, r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert found[("test", "mcc", "mcc")] == round(metrics["test"]["mcc"], 4)
    assert found[("test", "rates", "rates_miss")] == round(metrics["test"]["rates_miss"], 4)
    assert ("test", "accuracy", "Accuracy") in found
    assert f"| mcc | {metrics['test']['mcc']:.4f} |" in card.text
    # hf-transfer evaluate reads the run's recipe and computes the same metrics again
    from hf_transfer.evaluation.evaluate import evaluate_model

    again = evaluate_model(out, str(text_csv_data), "test")
    assert again["mcc"] == pytest.approx(metrics["test"]["mcc"]) and again["rates_hit"] == again["accuracy"]


def test_by_name_offline_is_one_line_before_training(tiny_bert_dir, text_csv_data, tmp_path, capsys, monkeypatch):
    import evaluate
    from huggingface_hub import constants

    cached = Path(evaluate.config.HF_MODULES_CACHE, "evaluate_modules", "metrics",
                  "evaluate-metric--matthews_correlation")
    if cached.exists():
        pytest.skip(f"matthews_correlation is cached in {cached}; offline it loads from there")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(text_recipe(tiny_bert_dir, text_csv_data, out, ["matthews_correlation"])))
    code = run_cli(["finetune", str(path)])
    captured = capsys.readouterr()
    assert code == EXIT_USER_ERROR, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    for words in ("evaluation.extra_metrics", "'matthews_correlation'", "HF_HUB_OFFLINE is set",
                  "{name: matthews_correlation, path: /path/to/metric/folder}", "run online"):
        assert words in errors[0], errors[0]
    assert "***** Running training *****" not in captured.err and not out.exists()


@pytest.mark.parametrize("extra, words", [
    ([3], ("'evaluation.extra_metrics[0]'", "metric name", "got 3")),
    ({"name": "mcc"}, ("'evaluation.extra_metrics'", "must be a list")),
    ([{"name": "mcc", "args": "average=macro"}], ("'evaluation.extra_metrics[0].args'", "mapping")),
    (["accuracy"], ("'evaluation.extra_metrics'", "'accuracy'", "built in", "another name")),
    ([{"name": "mcc", "path": "/no/such/metric_folder"}], ("cannot load 'mcc'", "no such file or folder")),
    ([{"name": "mcc", "path": "{root}/mcc_copy", "args": {"average": "macro"}}],
     ("'mcc' fails on a trial computation", "average", "args")),
    ([{"name": "accuracy_rates", "path": "{root}/rates"}, {"name": "accuracy", "path": "{root}/rates"}],
     ("'accuracy'", "built in")),
], ids=["number", "mapping", "args-not-mapping", "built-in-name", "missing-path", "bad-args", "built-in-later"])
def test_bad_extra_metrics_are_one_line_naming_the_field(extra, words, tiny_bert_dir, text_csv_data, metrics_root,
                                                         tmp_path, capsys):
    extra = json.loads(json.dumps(extra).replace("{root}", str(metrics_root)))
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(text_recipe(tiny_bert_dir, text_csv_data, out, extra)))
    code = run_cli(["finetune", str(path)])
    captured = capsys.readouterr()
    assert code == EXIT_USER_ERROR, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    for word in words:
        assert word in errors[0], errors[0]
    assert "***** Running training *****" not in captured.err and not (out / "metrics.json").exists()


def test_an_extra_metric_never_replaces_a_built_in_key(metrics_root):
    metrics = load_extra_metrics(Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": "unused"}, "data": {"path": "unused"},
        "evaluation": {"extra_metrics": [{"name": "f1", "path": str(metrics_root / "rates")}]},
    }).evaluation.extra_metrics)
    labels, predictions = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    report = metrics.add_to({"f1_hit": -1.0, "accuracy": 0.75}, labels, predictions)
    assert report == {"f1_hit": -1.0, "accuracy": 0.75, "f1_miss": 0.25}
    assert flatten("m", {"a": 1, "b": np.float32(0.5), "c": [1, 2], "d": True}) == {"m_a": 1.0, "m_b": 0.5}
    assert flatten("m", {"score": np.int64(3)}) == {"m": 3.0}
