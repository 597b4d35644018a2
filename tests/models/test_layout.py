"""discover_layout: head vs backbone layers, from the stem/embeddings up."""

from __future__ import annotations

import pytest
import timm
from transformers import (AutoModelForSequenceClassification, TimmWrapperConfig, TimmWrapperForImageClassification)

from hf_transfer.models.layout import ParameterLayout, discover_layout


def assert_partition(model, layout: ParameterLayout) -> None:
    names = [name for name, _ in model.named_parameters()]
    assigned = list(layout.head) + list(layout.backbone())
    assert sorted(assigned) == sorted(names), "every parameter must be in exactly one of head / layers"
    assert all(layout.layers), "no empty layer"


@pytest.fixture
def timm_wrapper(tiny_timm_dir):
    return TimmWrapperForImageClassification.from_pretrained(tiny_timm_dir)


def test_timm_wrapper_head_is_the_classifier(timm_wrapper):
    layout = discover_layout(timm_wrapper)
    assert timm_wrapper.config.pretrained_cfg["classifier"] == "classifier"
    assert sorted(layout.head) == ["timm_model.classifier.bias", "timm_model.classifier.weight"]


def test_timm_wrapper_layers_from_stem_up(timm_wrapper):
    layout = discover_layout(timm_wrapper)
    assert_partition(timm_wrapper, layout)
    assert layout.num_layers == 6
    assert layout.layers[0][0] == "timm_model.conv_stem.weight"
    assert all(name.startswith("timm_model.blocks.0.") for name in layout.layers[1])
    stages = [int(layer[0].split(".")[2]) for layer in layout.layers[1:]]
    assert stages == sorted(stages) == list(range(5))
    assert "timm_model.conv_head.weight" in layout.layers[-1]


def test_timm_head_name_comes_from_pretrained_cfg():
    """test_resnet calls its head ``fc``."""
    cfg = timm.models.get_pretrained_cfg("test_resnet").to_dict()
    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="test_resnet", pretrained_cfg=cfg,
                                                                num_labels=4))
    layout = discover_layout(model)
    assert sorted(layout.head) == ["timm_model.fc.bias", "timm_model.fc.weight"]
    assert_partition(model, layout)
    assert layout.layers[0][0].startswith("timm_model.conv1.")
    assert layout.layers[-1][0].startswith("timm_model.layer4.")


def test_bare_timm_model_has_no_prefix():
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    layout = discover_layout(model)
    assert sorted(layout.head) == ["classifier.bias", "classifier.weight"]
    assert layout.layers[0][0] == "conv_stem.weight"
    assert_partition(model, layout)


@pytest.fixture
def bert(tiny_bert_dir):
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)


def test_bert_head_is_pooler_and_classifier(bert):
    """The pooler is BERT's head hidden layer (RoBERTa's is classifier.dense): it trains in a linear probe."""
    layout = discover_layout(bert)
    assert sorted(layout.head) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias",
                                   "classifier.weight"]


def test_bert_layers_embeddings_then_blocks(bert):
    layout = discover_layout(bert)
    assert_partition(bert, layout)
    assert layout.num_layers == 1 + bert.config.num_hidden_layers
    assert all(name.startswith("bert.embeddings.") for name in layout.layers[0])
    for index in range(bert.config.num_hidden_layers):
        assert all(name.startswith(f"bert.encoder.layer.{index}.") for name in layout.layers[1 + index])


def test_model_without_base_model_is_rejected():
    from torch import nn

    with pytest.raises(ValueError, match="no base model"):
        discover_layout(nn.Linear(2, 2))
