"""``hf-transfer rank`` and ``model.name_or_path: auto`` end to end on tiny random models and generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_sentences, write_text_csv

from hf_transfer import Recipe, RecipeError, finetune
from hf_transfer.cli import EXIT_USER_ERROR, run_cli


@pytest.fixture(scope="module")
def bare_bert_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny BERT encoder saved without its classification head (like sentence-transformers folders)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("bare_bert")
    BertForSequenceClassification.from_pretrained(tiny_bert_dir).bert.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(directory)
    return directory


def rank(*args: str) -> int:
    return run_cli(["rank", *map(str, args)])


def test_rank_images_writes_table_json_and_plot_and_refuses_to_overwrite(tiny_timm_dir, image_folder_data,
                                                                          tmp_path, capsys):
    out = tmp_path / "ranking"
    candidates = [tiny_timm_dir, f"random:{tiny_timm_dir}"]
    assert rank("--data", image_folder_data, "--candidates", *candidates, "--max-samples", 30, "--output", out) == 0
    printed = capsys.readouterr().out
    assert "| rank | candidate | LogME | LEEP | NCE | H-score | seconds |" in printed
    report = json.loads((out / "ranking.json").read_text())
    assert report["num_samples"] == 30 and report["num_classes"] == 3 and report["rank_by"] == "logme"
    results = report["results"]
    assert sorted(r["candidate"] for r in results) == sorted(map(str, candidates))
    assert [r["rank"] for r in results] == [1, 2]
    assert results[0]["scores"]["logme"] >= results[1]["scores"]["logme"]
    assert report["best"] == results[0]["candidate"]
    for result in results:  # the saved 3-class head is a source head, random or not
        assert result["source_classes"] == 3 and result["feature_dim"] > 0
        assert all(isinstance(result["scores"][name], float) for name in ("logme", "leep", "nce", "hscore"))
    assert (out / "ranking.png").read_bytes().startswith(b"\x89PNG")
    assert str(tiny_timm_dir) in (out / "ranking.md").read_text()

    before = (out / "ranking.json").read_text()
    assert rank("--data", image_folder_data, "--candidates", *candidates, "--output", out) == EXIT_USER_ERROR
    assert "already holds a finished ranking" in capsys.readouterr().err
    assert (out / "ranking.json").read_text() == before

    assert rank("--data", image_folder_data, "--candidates", *candidates, "--max-samples", 30, "--output", out,
                "--overwrite") == 0
    again = json.loads((out / "ranking.json").read_text())["results"]
    assert all(r["cache_hit"] for r in again)  # features cached; random: weights are seeded, so they hit too
    assert [r["scores"] for r in again] == [r["scores"] for r in results]


def test_rank_text_reports_na_for_an_encoder_without_a_head(tiny_bert_dir, bare_bert_dir, text_csv_data,
                                                            tmp_path, capsys):
    out = tmp_path / "ranking"
    assert rank("--data", text_csv_data, "--candidates", tiny_bert_dir, bare_bert_dir, "--output", out) == 0
    results = {r["candidate"]: r for r in json.loads((out / "ranking.json").read_text())["results"]}
    headed, bare = results[str(tiny_bert_dir)], results[str(bare_bert_dir)]
    assert headed["scores"]["leep"] is not None and headed["source_classes"] == 2
    assert bare["scores"]["leep"] is None and bare["scores"]["nce"] is None
    assert "no classifier weights" in bare["notes"]["leep"]
    assert bare["scores"]["logme"] is not None and bare["scores"]["hscore"] is not None
    assert "n/a: LEEP:" in (out / "ranking.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--label-column", "nope"], "'data.label_column' = 'nope' is not a column"),
    (["--candidates", "./no/such/model"], "Candidate './no/such/model'"),
    (["--max-samples", "1"], "--max-samples must be at least 2"),
])
def test_rank_bad_input_exits_2_naming_the_field(args, message, tiny_timm_dir, image_folder_data, tmp_path, capsys):
    arguments = ["--data", image_folder_data, "--candidates", tiny_timm_dir, "--output", tmp_path / "out", *args]
    assert rank(*arguments) == EXIT_USER_ERROR
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rank_needs_two_classes(tiny_bert_dir, tmp_path, capsys):
    rows = [(text, "positive") for text, _ in make_sentences(12, seed=0)]
    data = write_text_csv(tmp_path / "one_class.csv", rows)
    assert rank("--data", data, "--candidates", tiny_bert_dir, "--output", tmp_path / "o") == EXIT_USER_ERROR
    assert "at least two" in capsys.readouterr().err


@pytest.mark.parametrize("model, message", [
    ({"name_or_path": "auto"}, "'model.candidates' is empty"),
    ({"name_or_path": "resnet18", "candidates": ["resnet18"]}, "set name_or_path: auto"),
    ({"name_or_path": "auto", "candidates": ["resnet18"], "rank_by": "accuracy"}, "'model.rank_by' = 'accuracy'"),
])
def test_recipe_validates_auto_and_candidates(model, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Recipe.from_dict({"task": "image-classification", "model": model, "data": {"path": "sklearn:digits"}})


def test_auto_recipe_trains_the_best_candidate_and_records_the_ranking(tiny_timm_dir, image_folder_data, tmp_path):
    out = tmp_path / "run"
    candidates = [str(tiny_timm_dir), f"random:{tiny_timm_dir}"]
    recipe = Recipe.from_dict({
        "task": "image-classification",
        "model": {"name_or_path": "auto", "candidates": candidates, "rank_max_samples": 24},
        "data": {"path": str(image_folder_data), "augmentation": {"random_resized_crop": False}},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 16, "disable_tqdm": True},
        "output": {"dir": str(out)},
    })
    metrics = finetune(recipe).metrics
    selection = metrics["backbone_selection"]
    best = max(selection["results"], key=lambda r: r["scores"]["logme"])
    assert selection["best"] == best["candidate"] and selection["num_samples"] == 24
    saved = yaml.safe_load((out / "recipe.yaml").read_text())["model"]
    assert saved["name_or_path"] == str(tiny_timm_dir) and saved["candidates"] is None
    assert saved["pretrained"] == (not best["candidate"].startswith("random:"))
    assert json.loads((out / "metrics.json").read_text())["backbone_selection"]["best"] == best["candidate"]
    assert json.loads((out / "ranking.json").read_text())["best"] == best["candidate"]
    card = (out / "README.md").read_text()
    assert "### Backbone selection" in card
    from hf_transfer.card import display_name

    assert all(f"`{display_name(c)}`" in card for c in candidates) and str(tiny_timm_dir) not in card
    assert (out / "ranking.png").is_file() and (out / "model.safetensors").is_file()
    with pytest.raises(Exception, match="finished run"):
        finetune(recipe)
