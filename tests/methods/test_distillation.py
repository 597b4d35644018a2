"""Distillation: the loss formula, the teacher checks and the logits cache."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertTokenizerFast

from hf_transfer.errors import ModelError
from hf_transfer.methods import create_method, get_method
from hf_transfer.methods.distillation import distillation_loss, load_teacher
from hf_transfer.tasks.text import check_same_tokenizer


def teacher_folder(tiny_bert_dir, tmp_path, labels=("negative", "positive")):
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model.save_pretrained(tmp_path / "teacher")
    BertTokenizerFast.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_loss_equals_the_formula_on_fixed_logits():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0], [-2.0, 0.0, 2.0]])
    T = 3.0

    def softmax(row):
        exps = [math.exp(v / T) for v in row]
        return [e / sum(exps) for e in exps]

    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = softmax(t_row), softmax(s_row)
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * T * T
    assert float(distillation_loss(student, teacher, T)) == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(teacher, teacher, T)) == pytest.approx(0.0, abs=1e-7)


def test_terms_weigh_cross_entropy_and_distillation():
    method = create_method("distillation", get_method("distillation").Options(teacher="t", alpha=0.25, temperature=2))
    student = torch.tensor([[2.0, -1.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    method.teacher_logits = lambda inputs: teacher
    outputs = type("Out", (), {"logits": student})()
    terms = method.loss_terms(None, {"labels": torch.tensor([0])}, outputs, torch.tensor(0.8))
    assert float(terms["ce"]) == pytest.approx(0.75 * 0.8)
    assert float(terms["kd"]) == pytest.approx(0.25 * float(distillation_loss(student, teacher, 2.0)))


def test_teacher_with_another_label_set_is_a_clear_error(tiny_bert_dir, tmp_path):
    folder = teacher_folder(tiny_bert_dir, tmp_path, labels=("bad", "good"))
    with pytest.raises(ModelError, match=r"'method.teacher' = .* predicts labels \['bad', 'good'\] but the data has "
                                         r"\['negative', 'positive'\]"):
        load_teacher(str(folder), "text-classification", ["negative", "positive"])


def test_teacher_with_another_label_count_is_a_clear_error(tiny_bert_dir, tmp_path):
    folder = teacher_folder(tiny_bert_dir, tmp_path)
    with pytest.raises(ModelError, match="same label set"):
        load_teacher(str(folder), "text-classification", ["negative", "neutral", "positive"])


def test_teacher_loads_frozen_in_eval_mode(tiny_bert_dir, tmp_path):
    teacher = load_teacher(str(teacher_folder(tiny_bert_dir, tmp_path)), "text-classification",
                           ["negative", "positive"])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_teacher_with_another_vocabulary_is_rejected(tiny_bert_dir, tmp_path):
    folder = teacher_folder(tiny_bert_dir, tmp_path)
    other = BertTokenizerFast(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "zebra": 5})
    with pytest.raises(ModelError, match="same tokenizer"):
        check_same_tokenizer(str(folder), other)
    check_same_tokenizer(str(folder), BertTokenizerFast.from_pretrained(tiny_bert_dir))


def test_cached_teacher_logits_match_and_ignore_padding(tiny_bert_dir, tmp_path):
    method = create_method("distillation", get_method("distillation").Options(
        teacher=str(teacher_folder(tiny_bert_dir, tmp_path)), cache_teacher_logits=True))
    method.teacher = load_teacher(method.options.teacher, "text-classification", ["negative", "positive"])
    calls = []
    method.teacher.register_forward_hook(lambda module, args, output: calls.append(1))
    batch = {"input_ids": torch.tensor([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]), "labels": torch.tensor([0, 1])}
    first = method.teacher_logits(batch)
    with torch.no_grad():
        direct = method.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(first, direct)
    # the second example again, padded differently and in another batch: served from the cache
    again = {"input_ids": torch.tensor([[2, 9, 3]]), "attention_mask": torch.tensor([[1, 1, 1]]),
             "labels": torch.tensor([1])}
    calls.clear()
    torch.testing.assert_close(method.teacher_logits(again)[0], direct[1], atol=1e-5, rtol=1e-5)
    assert calls == []
