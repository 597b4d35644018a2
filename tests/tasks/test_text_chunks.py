"""``data.truncation: chunk``: long texts read whole, as overlapping windows whose logits are averaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_transfer
from hf_transfer import finetune
from hf_transfer.check import check_recipe
from hf_transfer.data.prepare import prepare_data
from hf_transfer.errors import RecipeError
from hf_transfer.evaluation.predict import pool_rows
from hf_transfer.tasks.base import get_task
from hf_transfer.tasks.text_length import Windows

from conftest import NEGATIVE_WORDS, NEUTRAL_WORDS, POSITIVE_WORDS, write_text_csv
from test_text_length import recipe

TASK = get_task("text-classification")


@pytest.fixture(scope="module")
def late_sentiment(tmp_path_factory) -> Path:
    """Texts whose first 6 words are filler and whose sentiment words come after them: a model that reads only
    the first window (6 content tokens) cannot tell the classes apart; every later window can."""
    root = tmp_path_factory.mktemp("late_sentiment")
    rng = np.random.default_rng(0)

    def rows(count: int) -> list[tuple[str, str]]:
        out = []
        for i in range(count):
            label = "positive" if i % 2 == 0 else "negative"
            words = rng.choice(NEUTRAL_WORDS, size=6).tolist()  # all the first window holds
            for _ in range(int(rng.integers(2, 7))):
                sentiment = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
                words += [*rng.choice(NEUTRAL_WORDS, size=2), rng.choice(sentiment)]
            out.append((" ".join(map(str, words)), label))
        return out

    write_text_csv(root / "train.csv", rows(96))
    write_text_csv(root / "test.csv", rows(40))
    return root


CHUNKED = {"max_length": 8, "truncation": "chunk", "chunk_overlap": 2}


def test_window_counts_match_the_tokenizer(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [" ".join(["film"] * n) for n in range(1, 40)]
    lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
    for max_length, overlap in ((8, 0), (8, 2), (8, 5), (12, 3)):
        windows = Windows.for_tokenizer(tokenizer, max_length, overlap, max_chunks=100)
        encoded, owners = windows.encode(tokenizer, texts)
        assert np.bincount(owners).tolist() == windows.count(lengths).tolist()
        assert max(len(ids) for ids in encoded["input_ids"]) == max_length


def test_windows_cover_every_token_in_order_with_the_overlap(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    words = (NEUTRAL_WORDS * 2)[:23]
    windows = Windows.for_tokenizer(tokenizer, 8, 2, max_chunks=100)
    encoded, owners = windows.encode(tokenizer, [" ".join(words), "good film"])
    content = [tokenizer.convert_ids_to_tokens(ids)[1:-1] for ids, owner in zip(encoded["input_ids"], owners)
               if owner == 0]
    rebuilt = content[0] + [token for window in content[1:] for token in window[2:]]
    assert rebuilt == words  # each window repeats the last 2 tokens of the one before, nothing is lost
    assert all(window[:2] == before[-2:] for before, window in zip(content, content[1:]))
    assert owners.count(1) == 1  # a short text is one window


def test_max_chunks_keeps_the_first_windows(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    text = " ".join(["film"] * 30)
    windows = Windows.for_tokenizer(tokenizer, 8, 0, max_chunks=3)
    encoded, owners = windows.encode(tokenizer, [text, "good"])
    assert owners == [0, 0, 0, 1]
    summary = windows.summary(np.array([len(tokenizer(text)["input_ids"]), 3]))
    assert summary == {"windows": 4, "texts_in_several_windows": 1, "texts_beyond_max_chunks": 1,
                       "beyond_max_chunks_share": 0.5}


def test_pool_rows_averages_each_examples_logits():
    logits = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [5.0, 1.0]])
    pooled, labels = pool_rows(logits, np.array([0, 0, 1, 1]), [4, 4, 7, 2])
    assert pooled.tolist() == [[5.0, 1.0], [0.5, 1.5], [2.0, 0.0]]  # examples 2, 4, 7 in order
    assert labels.tolist() == [1, 0, 1]


def test_model_inputs_train_on_windows_and_group_evaluation_rows(tiny_bert_dir, late_sentiment):
    run = recipe(tiny_bert_dir, late_sentiment, data=CHUNKED)
    data = prepare_data(run.data, TASK.input_roles, seed=run.seed)
    model, tokenizer = TASK.load_model(run, data.label_names)
    inputs = TASK.model_inputs(run, data, model, tokenizer)
    lengths = np.array([len(ids) for ids in tokenizer(list(data.test["text"]))["input_ids"]])
    expected = Windows.for_tokenizer(tokenizer, 8, 2, 8).count(lengths)
    assert len(inputs.test) == int(np.minimum(expected, 8).sum()) > len(data.test)
    groups = inputs.groups["test"]
    assert np.bincount(groups).tolist() == np.minimum(expected, 8).tolist()
    assert [inputs.test[i]["labels"] for i in range(len(groups))] == [data.test[g]["labels"] for g in groups]
    assert "example_index" not in inputs.train.column_names and "train" not in inputs.groups
    assert model.config.tokenization == {**model.config.tokenization, "truncation": "chunk", "chunk_overlap": 2,
                                         "max_chunks": 8, "max_length": 8}
    report = inputs.report["chunks"]
    assert report["test"]["windows"] == len(inputs.test) and report["chunk_overlap"] == 2


@pytest.fixture(scope="module")
def chunk_runs(tiny_bert_dir, late_sentiment, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chunk_runs")
    training = {"num_train_epochs": 8, "learning_rate": 3e-3}
    runs = {}
    for truncation in ("head", "chunk"):
        runs[truncation] = root / truncation
        finetune(recipe(tiny_bert_dir, late_sentiment, runs[truncation], data={**CHUNKED, "truncation": truncation},
                        training=training))
    return runs


def test_chunks_read_what_head_truncation_cuts(chunk_runs):
    metrics = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in chunk_runs.items()}
    chunk, head = metrics["chunk"]["test"], metrics["head"]["test"]
    assert chunk["num_samples"] == head["num_samples"] == 40  # texts, not windows
    assert chunk["rows"] > 40 and "rows" not in head
    assert chunk["accuracy"] >= 0.9 and head["accuracy"] <= 0.75, (chunk["accuracy"], head["accuracy"])


def test_predict_averages_the_window_logits(chunk_runs):
    folder = chunk_runs["chunk"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    long, short = " ".join(["film"] * 17 + ["awful"]), "great"
    encoded = tokenizer([long], truncation=True, max_length=8, stride=2, return_overflowing_tokens=True)
    encoded.pop("overflow_to_sample_mapping")
    with torch.inference_mode():
        windows = model(**tokenizer.pad(dict(encoded), return_tensors="pt")).logits
        alone = model(**tokenizer([short], return_tensors="pt")).logits
    assert len(windows) == 4
    results = hf_transfer.predict(folder, texts=[long, short])
    for result, logits in zip(results, (windows.mean(0), alone[0])):
        expected = logits.softmax(-1)
        assert {r["label"]: r["score"] for r in result} == pytest.approx(
            {model.config.id2label[i]: float(expected[i]) for i in range(2)}, abs=1e-5)
    card = (folder / "README.md").read_text()
    assert "windows" in card


def test_evaluate_command_scores_texts_not_windows(chunk_runs, late_sentiment):
    from hf_transfer.evaluation.evaluate import evaluate_model

    report = evaluate_model(chunk_runs["chunk"], str(late_sentiment), split="test")
    saved = json.loads((chunk_runs["chunk"] / "metrics.json").read_text())["test"]
    assert report["num_samples"] == 40 and report["accuracy"] == pytest.approx(saved["accuracy"])


def test_check_reports_the_windows(tiny_bert_dir, late_sentiment, tmp_path):
    report = check_recipe(recipe(tiny_bert_dir, late_sentiment, tmp_path / "out", data=CHUNKED))["inputs"]
    assert report["truncation"] == "chunk" and report["chunks"]["train"]["texts_in_several_windows"] > 0


@pytest.mark.parametrize("data, words", [
    ({"chunk_overlap": -1}, ("'data.chunk_overlap'", "0 or more")),
    ({"max_chunks": 0}, ("'data.max_chunks'", "1 or more")),
])
def test_bad_chunk_settings_are_one_line_errors(tiny_bert_dir, tmp_path, data, words):
    with pytest.raises(RecipeError) as error:
        recipe(tiny_bert_dir, tmp_path, data=data)
    assert all(word in str(error.value) for word in words) and "\n" not in str(error.value), error.value


def test_an_overlap_that_leaves_no_new_tokens_is_refused_before_training(tiny_bert_dir, late_sentiment, tmp_path):
    with pytest.raises(RecipeError, match=r"'data.chunk_overlap' = 6 leaves no new tokens.*below 6") as error:
        check_recipe(recipe(tiny_bert_dir, late_sentiment, tmp_path / "out", data={**CHUNKED, "chunk_overlap": 6}))
    assert "\n" not in str(error.value)


def test_a_linear_probe_on_cached_window_features_scores_texts(tiny_bert_dir, late_sentiment, tmp_path):
    out = tmp_path / "probe"
    finetune(recipe(tiny_bert_dir, late_sentiment, out, data=CHUNKED, strategy={"name": "linear_probe"}))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 40 and metrics["test"]["rows"] > 40
    assert metrics["parameters"]["trainable"] < metrics["parameters"]["total"]
