"""Long texts: ``data.max_length: auto``, the truncation report, ``data.truncation`` and ``model.pooling``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, pipeline

import hf_transfer  # noqa: F401  (registers the mean-pooled classifier)
from hf_transfer import finetune
from hf_transfer.check import check_recipe
from hf_transfer.data.prepare import prepare_data
from hf_transfer.errors import RecipeError
from hf_transfer.recipe import Recipe
from hf_transfer.strategies import STRATEGIES
from hf_transfer.tasks.base import get_task
from hf_transfer.tasks.text_length import (TokenLimit, choose_max_length, encode_texts, length_summary,
                                           model_token_limit)
from hf_transfer.tasks.text_pooling import MODEL_TYPE, PooledTextForSequenceClassification

from conftest import POSITIVE_WORDS, write_text_csv

TASK = get_task("text-classification")
TRAINING = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
            "learning_rate": 1e-3, "report_to": "none", "disable_tqdm": True, "save_strategy": "no"}


@pytest.fixture(scope="module")
def sentence_transformers_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny BERT as a sentence-transformers checkpoint: mean pooling, trained on 12 tokens."""
    folder = tmp_path_factory.mktemp("tiny_st") / "model"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12, "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return folder


@pytest.fixture(scope="module")
def long_text_data(tmp_path_factory) -> Path:
    """train.csv with texts of 3 to 20 words (5 to 22 tokens) and test.csv; labels follow the first word."""
    root = tmp_path_factory.mktemp("long_texts")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        label = "positive" if i % 2 == 0 else "negative"
        words = ["good" if label == "positive" else "bad"] + ["film"] * int(rng.integers(2, 20))
        rows.append((" ".join(words), label))
    write_text_csv(root / "train.csv", rows)
    write_text_csv(root / "test.csv", rows[:10])
    return root


def recipe(model_path: Path, data_path: Path, out: Path | None = None, /, **sections: dict[str, Any]) -> Recipe:
    base: dict[str, Any] = {"task": "text-classification", "model": {"name_or_path": str(model_path)},
                            "data": {"path": str(data_path)}, "training": dict(TRAINING)}
    if out is not None:
        base["output"] = {"dir": str(out)}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Recipe.from_dict(base)


def prepared(run: Recipe):
    data = prepare_data(run.data, TASK.input_roles, seed=run.seed)
    model, tokenizer = TASK.load_model(run, data.label_names)
    return data, model, tokenizer


def train_lengths(data, tokenizer) -> np.ndarray:
    texts = list(data.train[data.columns["text"]])
    return np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])


# ------------------------------------------------------------------------------------------ max_length: auto

def test_auto_takes_the_95th_percentile_of_the_training_texts(tiny_bert_dir, long_text_data):
    data, model, tokenizer = prepared(recipe(tiny_bert_dir, long_text_data))
    inputs = TASK.model_inputs(recipe(tiny_bert_dir, long_text_data), data, model, tokenizer)
    expected = int(np.percentile(train_lengths(data, tokenizer), 95, method="higher"))
    assert 8 < expected < 22  # below the longest text and the tiny model's limit of 64
    assert max(len(ids) for ids in inputs.train["input_ids"]) == expected
    assert model.config.tokenization["max_length"] == expected and model.config.tokenization["truncation"] == "head"


def test_auto_is_capped_at_the_sentence_transformers_limit(sentence_transformers_dir, long_text_data):
    run = recipe(sentence_transformers_dir, long_text_data)
    data, model, tokenizer = prepared(run)
    inputs = TASK.model_inputs(run, data, model, tokenizer)
    assert max(len(ids) for ids in inputs.train["input_ids"]) == 12  # max_seq_length, not the p95 (~20)
    assert model.config.tokenization == {"model_limit": 12, "model_limit_from": "sentence-transformers max_seq_length",
                                         "max_length": 12, "truncation": "head"}


def test_the_limit_is_the_smallest_the_checkpoint_states(sentence_transformers_dir):
    tokenizer = AutoTokenizer.from_pretrained(sentence_transformers_dir)
    config = AutoConfig.from_pretrained(sentence_transformers_dir)
    assert model_token_limit(config, tokenizer, str(sentence_transformers_dir)) == TokenLimit(
        12, "sentence-transformers max_seq_length", 64)
    config.max_position_embeddings = 40  # fewer positions than the tokenizer's 64
    assert model_token_limit(config, tokenizer) == TokenLimit(40, "max_position_embeddings", 40)
    tokenizer.model_max_length = int(1e30)  # "no limit"
    assert model_token_limit(SimpleNamespace(), tokenizer) == TokenLimit(None, "no limit known", None)


def test_choose_max_length():
    lengths = np.arange(101)  # 0 .. 100: the 95th percentile is 95
    limit = TokenLimit(80, "sentence-transformers max_seq_length", 512)
    assert choose_max_length("auto", lengths, TokenLimit(None, "no limit known", None))[0] == 95
    value, why = choose_max_length("auto", lengths, limit)
    assert value == 80 and "capped" in why and "sentence-transformers" in why
    assert choose_max_length(200, lengths, limit) == (200, "data.max_length")  # a number passes the soft limit
    assert choose_max_length(1000, lengths, limit)[0] == 512  # but not the model's positions
    assert choose_max_length("auto", np.zeros(0, dtype=int), limit, recorded=48)[0] == 48  # a trained folder's
    assert choose_max_length("auto", np.array([3, 4]), limit)[0] == 8  # never below data.max_length's minimum


def test_length_summary_counts_the_cut_texts():
    summary = length_summary(np.array([5, 10, 10, 20, 40]), 10)
    assert summary == {"texts": 5, "median": 10, "p95": 40, "max": 40, "truncated": 2, "truncated_share": 0.4}


def test_check_reports_lengths_and_the_share_cut(tiny_bert_dir, long_text_data, tmp_path):
    run = recipe(tiny_bert_dir, long_text_data, tmp_path / "out", data={"max_length": 10})
    report = check_recipe(run)["inputs"]
    data = prepare_data(run.data, TASK.input_roles, seed=run.seed)
    lengths = train_lengths(data, AutoTokenizer.from_pretrained(tiny_bert_dir))
    train = report["tokens"]["train"]
    assert report["max_length"] == 10 and report["max_length_from"] == "data.max_length"
    assert report["pooling"] == "cls" and report["truncation"] == "head" and "64" in report["model_limit"]
    assert train["texts"] == len(lengths) and train["max"] == lengths.max()
    assert train["truncated"] == int((lengths > 10).sum()) > 0
    assert set(report["tokens"]) == {"train", "validation", "test"}


def test_the_run_log_says_how_many_texts_are_cut(tiny_bert_dir, long_text_data, tmp_path, caplog):
    run = recipe(tiny_bert_dir, long_text_data, data={"max_length": 8})
    data, model, tokenizer = prepared(run)
    with caplog.at_level(logging.INFO, logger="hf_transfer.tasks.text"):
        TASK.model_inputs(run, data, model, tokenizer)
    cut = int((train_lengths(data, tokenizer) > 8).sum())
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(f"{cut} of {len(data.train)} texts" in line and "max_length 8" in line for line in info), info
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("raise data.max_length (the model reads up to 64)" in line for line in warnings), warnings


# ------------------------------------------------------------------------------------------ data.truncation

WORDS = " ".join(POSITIVE_WORDS)  # 10 tokens between [CLS] and [SEP]


@pytest.mark.parametrize("truncation, kept", [
    ("head", POSITIVE_WORDS[:6]),
    ("tail", POSITIVE_WORDS[-6:]),
    ("head_tail", POSITIVE_WORDS[:1] + POSITIVE_WORDS[-5:]),  # a quarter of the 6 content tokens from the start
])
def test_truncation_keeps_the_right_tokens(tiny_bert_dir, truncation, kept):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    encoded = encode_texts(tokenizer, [WORDS, "good film"], None, 8, truncation)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == ["[CLS]", *kept, "[SEP]"]
    assert encoded["input_ids"][1] == tokenizer("good film")["input_ids"]  # a short text stays whole
    for key in ("attention_mask", "token_type_ids"):
        assert [len(row) for row in encoded[key]] == [8, 4]


def test_tail_trains_on_the_end_of_each_text(tiny_bert_dir, long_text_data):
    run = recipe(tiny_bert_dir, long_text_data, data={"max_length": 8, "truncation": "tail"})
    data, model, tokenizer = prepared(run)
    inputs = TASK.model_inputs(run, data, model, tokenizer)
    long = [i for i, n in enumerate(train_lengths(data, tokenizer)) if n > 8]
    assert long and all(tokenizer.convert_ids_to_tokens(inputs.train[i]["input_ids"])[1:7] == ["film"] * 6
                        for i in long)  # the label word at the start is gone: the tail was kept
    assert model.config.tokenization["truncation"] == "tail"


def test_cuts_that_keep_one_texts_end_refuse_text_pairs(tiny_bert_dir, tmp_path):
    data = tmp_path / "pairs"
    data.mkdir()
    (data / "train.csv").write_text("text,text_pair,label\n" + "".join(
        f"good film {i},bad film,{'a' if i % 2 else 'b'}\n" for i in range(20)))
    with pytest.raises(RecipeError, match=r"'data.truncation' = head_tail reads one text.*text pairs") as error:
        check_recipe(recipe(tiny_bert_dir, data, tmp_path / "out", data={"truncation": "head_tail"}))
    assert "\n" not in str(error.value)
    pairs = check_recipe(recipe(tiny_bert_dir, data, tmp_path / "out"))["inputs"]["tokens"]["train"]
    assert pairs["max"] == 8  # [CLS] good film [UNK] [SEP] bad film [SEP]: both texts are counted


@pytest.mark.parametrize("section, values, words", [
    ("data", {"max_length": "long"}, ("'data.max_length'", "auto")),
    ("data", {"max_length": 4}, ("'data.max_length'", "between 8 and 8192")),
    ("data", {"truncation": "middle"}, ("'data.truncation'", "'head_tail'")),
    ("model", {"pooling": "max"}, ("'model.pooling'", "'mean'")),
])
def test_bad_values_are_one_line_errors(tiny_bert_dir, tmp_path, section, values, words):
    with pytest.raises(RecipeError) as error:
        recipe(tiny_bert_dir, tmp_path, **{section: values})
    assert all(word in str(error.value) for word in words) and "\n" not in str(error.value), error.value


# ------------------------------------------------------------------------------------------ model.pooling

def test_auto_pooling_follows_the_checkpoint(tiny_bert_dir, sentence_transformers_dir, long_text_data):
    _, mean_model, _ = prepared(recipe(sentence_transformers_dir, long_text_data))
    assert isinstance(mean_model, PooledTextForSequenceClassification)
    assert mean_model.encoder.pooler is None  # BERT's [CLS] pooler is never used, so not kept
    _, cls_model, _ = prepared(recipe(tiny_bert_dir, long_text_data))
    assert type(cls_model).__name__ == "BertForSequenceClassification"
    _, forced, _ = prepared(recipe(sentence_transformers_dir, long_text_data, model={"pooling": "cls"}))
    assert type(forced).__name__ == "BertForSequenceClassification"
    # the pooled model starts from the checkpoint's encoder
    encoder = AutoModelForSequenceClassification.from_pretrained(sentence_transformers_dir).bert
    assert torch.equal(mean_model.encoder.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


def test_features_are_keyed_on_pooling_length_and_cut(sentence_transformers_dir, long_text_data):
    def identity(**sections):
        run = recipe(sentence_transformers_dir, long_text_data, **sections)
        data, model, tokenizer = prepared(run)
        TASK.model_inputs(run, data, model, tokenizer)
        return json.dumps(TASK.preprocessing_identity(run, model, tokenizer), sort_keys=True)

    keys = [identity(), identity(model={"pooling": "cls"}), identity(data={"max_length": 10}),
            identity(data={"truncation": "tail"})]
    assert len(set(keys)) == len(keys)


@pytest.fixture(scope="module")
def mean_run(sentence_transformers_dir, long_text_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mean_run") / "run"
    finetune(recipe(sentence_transformers_dir, long_text_data, out, data={"truncation": "head_tail"}))
    return out


def test_a_mean_pooled_run_reloads_through_auto_classes_and_pipeline(mean_run):
    config = json.loads((mean_run / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE and config["pooling"] == "mean"
    assert config["tokenization"]["max_length"] == 12 and config["tokenization"]["truncation"] == "head_tail"
    model = AutoModelForSequenceClassification.from_pretrained(mean_run).eval()
    assert isinstance(model, PooledTextForSequenceClassification)
    tokenizer = AutoTokenizer.from_pretrained(mean_run)
    texts = ["good film film", "bad film"]
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    scores = pipeline("text-classification", model=str(mean_run))(texts, top_k=None)
    for row, result in zip(logits.softmax(-1), scores):
        by_label = {item["label"]: item["score"] for item in result}
        assert [by_label[model.config.id2label[i]] for i in range(2)] == pytest.approx(row.tolist(), abs=1e-6)
    card = (mean_run / "README.md").read_text()
    assert "import hf_transfer" in card and "keeping the start and the end" in card


def test_predict_cuts_texts_as_in_training(mean_run):
    long = "bad " + " ".join(["film"] * 30) + " good"
    tokenizer = AutoTokenizer.from_pretrained(mean_run)
    model = AutoModelForSequenceClassification.from_pretrained(mean_run).eval()
    encoded = tokenizer.pad(encode_texts(tokenizer, [long], None, 12, "head_tail"), return_tensors="pt")
    assert encoded["input_ids"].shape[1] == 12
    with torch.inference_mode():
        expected = model(**encoded).logits.softmax(-1)[0]
    result = hf_transfer.predict(mean_run, texts=[long])[0]
    assert {r["label"]: r["score"] for r in result} == pytest.approx(
        {model.config.id2label[i]: float(expected[i]) for i in range(2)}, abs=1e-6)


def test_cls_pooling_stays_a_plain_transformers_folder(sentence_transformers_dir, long_text_data, tmp_path):
    out = tmp_path / "cls"
    finetune(recipe(sentence_transformers_dir, long_text_data, out, model={"pooling": "cls"}))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForSequenceClassification"]
    assert "import hf_transfer" not in (out / "README.md").read_text()
    # a plain folder may still be read by mean: a new head over its encoder
    _, model, _ = prepared(recipe(out, long_text_data, model={"pooling": "mean"}))
    assert isinstance(model, PooledTextForSequenceClassification)


def test_a_trained_mean_pooled_folder_keeps_its_pooling(mean_run, long_text_data):
    _, model, _ = prepared(recipe(mean_run, long_text_data))
    assert isinstance(model, PooledTextForSequenceClassification)
    assert model.config.tokenization["model_limit"] == 12  # the limit it was trained under, not BERT's 64
    with pytest.raises(RecipeError, match=r"'model.pooling' = cls, but .* mean-pooled classifier") as error:
        prepared(recipe(mean_run, long_text_data, model={"pooling": "cls"}))
    assert "\n" not in str(error.value)


def test_the_plain_bert_config_keeps_the_recorded_tokenization(tmp_path):
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    config.tokenization = {"max_length": 20, "truncation": "tail"}
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).tokenization == {"max_length": 20, "truncation": "tail"}


def test_a_mean_pooled_linear_probe_trains_on_cached_features(sentence_transformers_dir, long_text_data, tmp_path):
    run = recipe(sentence_transformers_dir, long_text_data, tmp_path / "probe", strategy={"name": "linear_probe"})
    finetune(run)
    metrics = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert metrics["feature_cache"]["adapter"] == "own-split"  # the pooled vector is cached, the head trains on it
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "probe")
    start = AutoModelForSequenceClassification.from_pretrained(sentence_transformers_dir).bert
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, start.embeddings.word_embeddings.weight)


def test_evaluate_reads_a_mean_pooled_folder_at_its_training_length(mean_run, long_text_data):
    report = hf_transfer.evaluate(mean_run, str(long_text_data), split="test")
    assert report["num_samples"] == 10 and 0 <= report["accuracy"] <= 1


def test_lora_on_a_mean_pooled_model_saves_a_pooled_folder(sentence_transformers_dir, long_text_data, tmp_path):
    out = tmp_path / "lora"
    finetune(recipe(sentence_transformers_dir, long_text_data, out, strategy={"name": "lora", "r": 4}))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert isinstance(model, PooledTextForSequenceClassification)
    assert not any("lora" in name for name in model.state_dict())  # merged into the encoder's weights


STRATEGY_OPTIONS = {"partial": {"frozen_layers": 1}, "gradual_unfreeze": {"head_epochs": 1, "layers_per_step": 1}}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_trains_and_saves_a_mean_pooled_model(strategy, sentence_transformers_dir, long_text_data,
                                                            tmp_path):
    out = tmp_path / strategy
    epochs = {"num_train_epochs": 2} if strategy == "gradual_unfreeze" else {}
    finetune(recipe(sentence_transformers_dir, long_text_data, out,
                    strategy={"name": strategy, **STRATEGY_OPTIONS.get(strategy, {})}, training=epochs))
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(out), PooledTextForSequenceClassification)


def test_metrics_json_records_the_length_plan_and_the_share_cut(mean_run):
    inputs = json.loads((mean_run / "metrics.json").read_text())["inputs"]
    assert inputs["max_length"] >= 8 and inputs["truncation"] == "head_tail"
    train = inputs["tokens"]["train"]
    assert train["texts"] > 0 and 0.0 <= train["truncated_share"] <= 1.0 and train["p95"] >= train["median"]
    assert set(inputs["tokens"]) >= {"train", "validation"}
