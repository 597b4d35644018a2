"""TransferTrainer's garbage-collection scope."""

from __future__ import annotations

import gc

from hf_transfer.training.trainer import gc_frozen


def test_gc_frozen_freezes_for_the_block_and_leaves_a_callers_freeze_alone():
    assert gc.get_freeze_count() == 0
    with gc_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gc_frozen():  # nested: the outer block stays in charge
            pass
        assert gc.get_freeze_count() == frozen
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
        del node
        assert gc.collect() >= 1
