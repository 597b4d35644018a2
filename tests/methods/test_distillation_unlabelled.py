"""Distillation on unlabelled data (``method.unlabelled``): the loss, the teacher's own preprocessing, the chosen
rows, the counts in metrics.json and the card, one-line errors, and a student that moves toward its teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, BertForSequenceClassification, BertTokenizerFast,
                          DataCollatorWithPadding)

from conftest import SPECIAL_TOKENS, make_sentences
from test_bad_inputs import one_error
from hf_transfer import Recipe, finetune
from hf_transfer.cli import run_cli
from hf_transfer.data.prepare import prepare_data
from hf_transfer.data.unlabelled import NO_LABEL, UnlabelledSection, load_unlabelled
from hf_transfer.methods import create_method, get_method
from hf_transfer.methods.distillation import UnlabelledBatches, content_keys, example_key
from hf_transfer.methods.preflight import method_preflight

LABELS = ("negative", "positive")


def text_only_csv(path, rows):
    """A csv with a text column and no label column at all."""
    path.write_text("text\n" + "".join(f"{text}\n" for text in rows), encoding="utf-8")
    return path


def save_teacher(tiny_bert_dir, folder, tokenizer=None, scale: float = 1.0, seed: int = 1,
                 bias: float | None = None):
    """The tiny BERT as a 2-label teacher: a new head drawn from ``seed`` and scaled so its outputs differ by input,
    or (``bias``) one that scores every input ``[-bias, bias]``."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    with torch.no_grad():
        if bias is None:
            model.classifier.weight.normal_(std=scale)
        else:
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([-bias, bias]))
    model.save_pretrained(folder)
    (tokenizer or BertTokenizerFast.from_pretrained(tiny_bert_dir)).save_pretrained(folder)
    return folder


def shuffled_tokenizer(tiny_bert_dir) -> BertTokenizerFast:
    """The same words under other ids: a teacher with another vocabulary than the student's."""
    words = list(BertTokenizerFast.from_pretrained(tiny_bert_dir).get_vocab())
    words = [w for w in words if w not in SPECIAL_TOKENS][::-1]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)


@pytest.fixture(scope="module")
def unlabelled_csv(tmp_path_factory, text_csv_data):
    """30 new sentences, plus 3 rows of train.csv and 2 of test.csv that must be excluded."""
    root = tmp_path_factory.mktemp("unlabelled")
    new = [text for text, _ in make_sentences(30, seed=7)]
    train = [text for text, _ in make_sentences(40, seed=0)][:3]
    test = [text for text, _ in make_sentences(12, seed=1)][:2]
    return text_only_csv(root / "extra.csv", new + train + test), len(set(new) - set(train) - set(test))


def recipe(tiny_bert_dir, data, out, method, **training) -> dict:
    return {"task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
            "data": {"path": str(data), "max_length": 32}, "method": {"name": "distillation", **method},
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                         "logging_steps": 1, "disable_tqdm": True, **training},
            "output": {"dir": str(out)}}


def kd_by_hand(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """``T^2`` times the batch mean of ``sum_c p_c log(p_c / q_c)``, written out in plain Python."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / temperature) for v in t_row]
        q = [math.exp(v / temperature) for v in s_row]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(student) * temperature ** 2


def test_unlabelled_rows_get_the_distillation_term_only(tiny_bert_dir):
    """loss = (1-a) CE(labelled) + a KD(labelled) + w KD(unlabelled): no cross-entropy on unlabelled rows, whatever
    their labels column holds."""
    alpha, temperature, weight = 0.25, 2.0, 0.7
    options = get_method("distillation").Options(teacher="t", alpha=alpha, temperature=temperature,
                                                 unlabelled=UnlabelledSection(path="x"), unlabelled_weight=weight)
    method = create_method("distillation", options)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert_dir)
    student = BertForSequenceClassification.from_pretrained(tiny_bert_dir).eval()  # no dropout: exact
    collator = DataCollatorWithPadding(tokenizer)
    labelled = collator([{**tokenizer(t), "labels": y} for t, y in [("a good film", 1), ("sad and dull", 0)]])
    teacher_labelled = torch.tensor([[0.5, 2.0], [1.5, -1.0]])
    keys = [example_key({k: v for k, v in labelled.items() if k != "labels"}, i) for i in range(2)]
    method.cache = dict(zip(keys, teacher_labelled))  # precomputed, as setup leaves it: no teacher model
    texts = ["the best story", "awful acting", "the movie was warm", "cold"]
    teacher_unlabelled = torch.tensor([[3.0, -3.0], [0.0, 0.2], [-1.0, 1.0], [2.0, 1.0]])
    rows = Dataset.from_list([dict(tokenizer(t), labels=NO_LABEL) for t in texts])

    def terms(unlabelled_rows):
        method.unlabelled = UnlabelledBatches(unlabelled_rows, teacher_unlabelled, collator, batch_size=4, seed=0)
        with torch.no_grad():
            outputs = student(**labelled)
            return method.loss_terms(student, labelled, outputs, outputs.loss), outputs

    found, outputs = terms(rows)
    features, _ = UnlabelledBatches(rows, teacher_unlabelled, collator, batch_size=4, seed=0).next()
    with torch.no_grad():
        order = [texts.index(tokenizer.decode(ids, skip_special_tokens=True)) for ids in features["input_ids"]]
        unlabelled_logits = student(**{k: v for k, v in features.items() if k != "labels"}).logits
    ce = torch.nn.functional.cross_entropy(outputs.logits, labelled["labels"])
    assert float(found["ce"]) == pytest.approx((1 - alpha) * float(ce), rel=1e-5)
    assert float(found["kd"]) == pytest.approx(alpha * kd_by_hand(outputs.logits, teacher_labelled, temperature),
                                               rel=1e-5)
    expected = weight * kd_by_hand(unlabelled_logits, teacher_unlabelled[order], temperature)
    assert float(found["kd_unlabelled"]) == pytest.approx(expected, rel=1e-5)
    # any labels on the unlabelled rows change nothing: no cross-entropy is ever taken on them
    relabelled, _ = terms(rows.map(lambda row, i: {"labels": i % 2}, with_indices=True))
    assert float(relabelled["kd_unlabelled"]) == pytest.approx(float(found["kd_unlabelled"]), rel=1e-6)
    assert set(found) == {"ce", "kd", "kd_unlabelled"}


def test_rows_of_the_labelled_splits_are_excluded(text_csv_data, unlabelled_csv):
    path, new_rows = unlabelled_csv
    data = prepare_data(Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": "x"},
                                          "data": {"path": str(text_csv_data)}}).data, ("text", "text_pair"), 42)
    found = load_unlabelled(UnlabelledSection(path=str(path)), data, "error", 42)
    assert found.report() == {"examples": new_rows, "split_rows": 35, "excluded_labelled": 35 - new_rows,
                              "dropped_bad": 0}
    labelled = set(data.train["text"]) | set(data.validation["text"]) | set(data.test["text"])
    assert not labelled & set(found.examples["text"])
    assert set(found.examples["labels"]) == {NO_LABEL}
    kept = load_unlabelled(UnlabelledSection(path=str(path), exclude_labelled=False, max_samples=20), data, "error", 1)
    assert len(kept.examples) == 20 and kept.excluded == 0


def test_cross_vocabulary_teacher_labels_the_data_with_its_own_tokenizer(tiny_bert_dir, text_csv_data,
                                                                         unlabelled_csv, tmp_path):
    """A teacher whose tokenizer maps words to other ids: its soft labels are computed once with its own
    tokenizer, for unlabelled and labelled rows; the student trains on its own; metrics and card say how many."""
    path, new_rows = unlabelled_csv
    other = shuffled_tokenizer(tiny_bert_dir)
    teacher_dir = save_teacher(tiny_bert_dir, tmp_path / "teacher", tokenizer=other, scale=5.0)
    out = tmp_path / "run"
    result = finetune(Recipe.from_dict(recipe(tiny_bert_dir, text_csv_data, out, {
        "teacher": str(teacher_dir), "alpha": 0.5, "unlabelled": {"path": str(path)},
        "unlabelled_batch_size": 4})))
    method = result.trainer.method
    assert method.teacher is None  # every teacher logit was computed before training
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    texts = method.unlabelled.dataset  # the student's token ids: decode them with the student's tokenizer
    student_tokenizer = BertTokenizerFast.from_pretrained(tiny_bert_dir)
    decoded = [student_tokenizer.decode(row["input_ids"], skip_special_tokens=True) for row in texts]
    with torch.no_grad():
        direct = teacher(**other(decoded, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(method.unlabelled.logits, direct, atol=1e-5, rtol=1e-4)
    train_texts = [student_tokenizer.decode(row["input_ids"], skip_special_tokens=True)
                   for row in result.trainer.train_dataset]
    with torch.no_grad():
        labelled = teacher(**other(train_texts, padding=True, return_tensors="pt")).logits
    keys = content_keys(result.trainer.train_dataset, result.trainer.data_collator, 8)
    torch.testing.assert_close(torch.stack([method.cache[key] for key in keys]), labelled, atol=1e-5, rtol=1e-4)

    metrics = json.loads((out / "metrics.json").read_text())
    steps = metrics["train"]["steps"]
    assert metrics["unlabelled"]["examples"] == new_rows
    assert metrics["unlabelled"]["examples_seen"] == steps * 4
    assert metrics["unlabelled"]["excluded_labelled"] == 35 - new_rows
    assert len(result.trainer.eval_dataset) == metrics["validation"]["num_samples"] < 40  # labelled rows only
    assert metrics["test"]["num_samples"] == 12
    logged = [e for e in result.trainer.state.log_history if "loss" in e]
    assert logged and all("loss_kd_unlabelled" in e and "loss_ce" in e for e in logged)
    assert f"{new_rows} unlabelled examples" in (out / "README.md").read_text()


def positive_share(model, texts, tokenizer) -> float:
    """Mean probability of ``positive`` over ``texts``."""
    with torch.no_grad():
        logits = model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return float(logits.softmax(-1)[:, 1].mean())


def test_student_moves_toward_the_teacher_on_unlabelled_data(tiny_bert_dir, text_csv_data, tmp_path):
    """A teacher that calls every sentence positive (p = 0.88); the labelled rows, half positive, get cross-entropy
    only (alpha 0): the unlabelled batches alone pull the student to the teacher, which the same training without
    them does not."""
    teacher_dir = save_teacher(tiny_bert_dir, tmp_path / "teacher", bias=1.0)
    path = text_only_csv(tmp_path / "extra.csv", [text for text, _ in make_sentences(120, seed=11)])
    held_out = [text for text, _ in make_sentences(40, seed=12)]
    method = {"teacher": str(teacher_dir), "alpha": 0.0, "unlabelled": {"path": str(path)},
              "unlabelled_batch_size": 16}
    training = {"num_train_epochs": 3, "learning_rate": 1e-2, "load_best_model_at_end": False}
    distilled = finetune(Recipe.from_dict(recipe(tiny_bert_dir, text_csv_data, tmp_path / "a", method, **training)))
    alone = finetune(Recipe.from_dict({**recipe(tiny_bert_dir, text_csv_data, tmp_path / "b", method, **training),
                                       "method": None}))
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert_dir)
    teacher = positive_share(AutoModelForSequenceClassification.from_pretrained(teacher_dir), held_out, tokenizer)
    start = positive_share(BertForSequenceClassification.from_pretrained(tiny_bert_dir), held_out, tokenizer)
    shares = [positive_share(run.model, held_out, tokenizer) for run in (distilled, alone)]
    assert teacher == pytest.approx(0.881, abs=1e-3)
    assert abs(teacher - shares[0]) < 0.5 * min(abs(teacher - shares[1]), abs(teacher - start)), (start, shares)


ERRORS = [
    ("no teacher", {"unlabelled": {"path": "UNLABELLED"}}, ["Missing required field 'method.teacher'"]),
    ("no column", {"unlabelled": {"path": "UNLABELLED", "text_column": "review"}},
     ["'method.unlabelled.text_column'", "review"]),
    ("no split", {"unlabelled": {"path": "UNLABELLED", "split": "extra"}}, ["'method.unlabelled.split'", "extra"]),
    ("all excluded", {"unlabelled": {"path": "LABELLED"}}, ["'method.unlabelled'", "no unlabelled example is left"]),
    ("empty", {"unlabelled": {"path": "EMPTY"}}, ["'method.unlabelled.path'", "empty"]),
    ("bad sample", {"unlabelled": {"path": "UNLABELLED", "max_samples": 0}}, ["'method.unlabelled.max_samples'"]),
    ("weight alone", {"unlabelled_weight": 2.0}, ["'method.unlabelled'", "unlabelled_weight"]),
]


@pytest.mark.parametrize("case, method, words", ERRORS, ids=[case for case, _, _ in ERRORS])
def test_bad_unlabelled_settings_are_one_line_errors_before_training(case, method, words, tiny_bert_dir,
                                                                     text_csv_data, unlabelled_csv, tmp_path, capsys):
    teacher_dir = save_teacher(tiny_bert_dir, tmp_path / "teacher")
    places = {"UNLABELLED": str(unlabelled_csv[0]), "LABELLED": str(text_csv_data / "train.csv"),
              "EMPTY": str(text_only_csv(tmp_path / "empty.csv", []))}
    if "unlabelled" in method:
        method = {**method, "unlabelled": {**method["unlabelled"], "path": places[method["unlabelled"]["path"]]}}
    if case != "no teacher":
        method = {"teacher": str(teacher_dir), **method}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tiny_bert_dir, text_csv_data, tmp_path / "out", method)), encoding="utf-8")
    one_error(capsys, run_cli(["finetune", str(path)]), *words, before_training=True)
    assert not (tmp_path / "out").exists()


def test_check_reports_the_unlabelled_rows(tiny_bert_dir, text_csv_data, unlabelled_csv, tmp_path):
    path, new_rows = unlabelled_csv
    run = Recipe.from_dict(recipe(tiny_bert_dir, text_csv_data, tmp_path / "out", {
        "teacher": str(save_teacher(tiny_bert_dir, tmp_path / "teacher")),
        "unlabelled": {"path": str(path), "max_samples": 10}}))
    summary = method_preflight(run, list(LABELS))
    assert summary["unlabelled"] == {"examples": 10, "split_rows": 35, "excluded_labelled": 35 - new_rows,
                                     "dropped_bad": 0}
