"""TransferTrainer's garbage-collection scope and the per-step costs it takes out of Trainer's loop."""

from __future__ import annotations

import gc
import weakref

import torch
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hf_transfer.models.layout import discover_layout
from hf_transfer.strategies import create_strategy, get_strategy
from hf_transfer.training.trainer import TransferTrainer, gc_frozen


def test_gc_frozen_freezes_for_the_block_and_leaves_a_callers_freeze_alone():
    assert gc.get_freeze_count() == 0
    with gc_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        made_since = [[] for _ in range(1000)]  # tracked objects that a second gc.freeze() would add
        with gc_frozen():  # nested: the outer block stays in charge
            pass
        # neither unfrozen (0) nor frozen again (+1000); frozen objects may be freed meanwhile, so it may fall
        assert 0 < gc.get_freeze_count() <= frozen
        del made_since
    assert gc.get_freeze_count() == 0

    gc.freeze()
    try:
        with gc_frozen():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_garbage_made_inside_the_block_is_still_collected():
    class Node:
        pass

    with gc_frozen():
        node = Node()
        node.self = node  # a reference cycle: only the collector frees it
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is None


def test_floating_point_ops_match_trainers_and_count_parameters_once(tmp_path, tiny_bert_dir, monkeypatch):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    strategy = create_strategy("full", get_strategy("full").Options(), discover_layout(model))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    trainer = TransferTrainer(model=model, args=args, strategy=strategy)
    inputs = {"input_ids": torch.ones(4, 7, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
    expected = Trainer.floating_point_ops(trainer, inputs)
    assert expected > 0

    counted = []
    original = type(model).num_parameters
    monkeypatch.setattr(type(model), "num_parameters",
                        lambda self, *a, **k: counted.append(1) or original(self, *a, **k))
    assert [trainer.floating_point_ops(inputs) for _ in range(3)] == [expected] * 3
    assert len(counted) == 1
    assert trainer.floating_point_ops({"labels": inputs["labels"]}) == 0  # no main input: nothing to count

    trainer.model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)  # a new model is recounted
    trainer.floating_point_ops(inputs)
    assert len(counted) == 2
