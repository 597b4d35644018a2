"""Strategies: which parameters train, BatchNorm of frozen parts, schedules and learning rates."""

from __future__ import annotations

import pytest
import torch
from transformers import (AutoModelForSequenceClassification, TimmWrapperForImageClassification, TrainerControl,
                          TrainerState, TrainingArguments)

from hf_transfer.errors import RecipeError
from hf_transfer.models.layout import discover_layout
from hf_transfer.strategies import STRATEGIES, create_strategy, get_strategy
from hf_transfer.training.trainer import TransferTrainer




def make(name: str, model, **options):
    strategy = create_strategy(name, get_strategy(name).Options(**options), discover_layout(model))
    return strategy


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def running_stats(model) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.named_buffers() if "running_" in name}


def train_mode_forward(model) -> None:
    model.train()
    with torch.no_grad():
        model(pixel_values=torch.randn(4, 3, 32, 32) * 3 + 1)


def test_registry_holds_the_documented_strategies():
    assert {"full", "linear_probe", "partial", "gradual_unfreeze", "layerwise_lr"} <= set(STRATEGIES)
    assert all(cls.name == name for name, cls in STRATEGIES.items())


def test_full_trains_everything(timm_model):
    for parameter in timm_model.parameters():
        parameter.requires_grad_(False)
    make("full", timm_model).prepare(timm_model)
    assert trainable(timm_model) == {name for name, _ in timm_model.named_parameters()}


def test_full_lets_batchnorm_statistics_move(timm_model):
    """Control for the linear-probe test below: a train-mode forward does update BatchNorm."""
    make("full", timm_model).prepare(timm_model)
    before = running_stats(timm_model)
    train_mode_forward(timm_model)
    after = running_stats(timm_model)
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_linear_probe_trains_only_the_head(timm_model):
    strategy = make("linear_probe", timm_model)
    strategy.prepare(timm_model)
    assert trainable(timm_model) == set(strategy.layout.head)
    assert strategy.freezes_backbone


def test_linear_probe_keeps_batchnorm_statistics_frozen(timm_model):
    make("linear_probe", timm_model).prepare(timm_model)
    before = running_stats(timm_model)
    assert before, "test_efficientnet has BatchNorm layers"
    train_mode_forward(timm_model)
    after = running_stats(timm_model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert timm_model.training  # the model as a whole stays in training mode
    assert not timm_model.timm_model.bn1.training
    assert not timm_model.timm_model.blocks.training


def test_linear_probe_turns_off_dropout_of_frozen_encoder(bert_model):
    make("linear_probe", bert_model).prepare(bert_model)
    bert_model.train()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    bert_model(**inputs)
    assert not bert_model.bert.embeddings.training and not bert_model.bert.encoder.training
    assert bert_model.dropout.training  # the head's dropout still works
    assert trainable(bert_model) == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight",
                                     "bert.pooler.dense.bias"}


def test_partial_freezes_exactly_the_first_layers(timm_model):
    strategy = make("partial", timm_model, frozen_layers=2)
    strategy.prepare(timm_model)
    layout = strategy.layout
    frozen = set(layout.layers[0]) | set(layout.layers[1])
    everything = {name for name, _ in timm_model.named_parameters()}
    assert trainable(timm_model) == everything - frozen
    before = running_stats(timm_model)
    train_mode_forward(timm_model)
    after = running_stats(timm_model)
    assert torch.equal(before["timm_model.bn1.running_mean"], after["timm_model.bn1.running_mean"])
    assert torch.equal(before["timm_model.blocks.0.0.bn1.running_mean"], after["timm_model.blocks.0.0.bn1.running_mean"])
    assert not torch.equal(before["timm_model.bn2.running_mean"], after["timm_model.bn2.running_mean"])


def test_partial_with_all_layers_frozen_is_allowed(bert_model):
    strategy = make("partial", bert_model, frozen_layers=3)  # embeddings + 2 encoder layers
    strategy.prepare(bert_model)
    assert trainable(bert_model) == set(strategy.layout.head)


def test_partial_with_too_many_layers_raises(timm_model):
    strategy = make("partial", timm_model, frozen_layers=7)
    with pytest.raises(RecipeError, match=r"'strategy\.frozen_layers' = 7 but the backbone has only 6 layers"):
        strategy.prepare(timm_model)


def test_gradual_unfreeze_schedule(timm_model):
    strategy = make("gradual_unfreeze", timm_model, head_epochs=1, layers_per_step=2, epochs_per_step=1)
    assert strategy.layout.num_layers == 6
    schedule = {epoch: strategy.trainable_layers_at(epoch) for epoch in (0, 0.5, 0.99, 1.0, 1.5, 2.0, 2.99, 3.0, 10)}
    assert schedule == {0: 0, 0.5: 0, 0.99: 0, 1.0: 2, 1.5: 2, 2.0: 4, 2.99: 4, 3.0: 6, 10: 6}


def test_gradual_unfreeze_fractional_epochs(timm_model):
    strategy = make("gradual_unfreeze", timm_model, head_epochs=0.5, layers_per_step=1, epochs_per_step=0.25)
    assert [strategy.trainable_layers_at(e) for e in (0.25, 0.5, 0.75, 1.0, 1.25)] == [0, 1, 2, 3, 4]


def test_gradual_unfreeze_all_at_once_after_head_epochs(timm_model):
    strategy = make("gradual_unfreeze", timm_model, head_epochs=2, layers_per_step=0)
    assert [strategy.trainable_layers_at(e) for e in (0, 1.9, 2, 5)] == [0, 0, 6, 6]


def test_gradual_unfreeze_callback_unfreezes_from_the_top(timm_model):
    strategy = make("gradual_unfreeze", timm_model, head_epochs=1, layers_per_step=2, epochs_per_step=1)
    layout = strategy.layout
    strategy.prepare(timm_model)
    assert trainable(timm_model) == set(layout.head)
    (callback,) = strategy.callbacks()
    state, control = TrainerState(), TrainerControl()
    state.epoch = 0.0
    callback.on_train_begin(None, state, control, model=timm_model)
    assert trainable(timm_model) == set(layout.head)

    state.epoch = 1.0
    callback.on_step_begin(None, state, control, model=timm_model)
    assert trainable(timm_model) == set(layout.head) | set(layout.layers[4]) | set(layout.layers[5])
    train_mode_forward(timm_model)
    assert timm_model.timm_model.bn2.training  # unfrozen top layer trains its BatchNorm again
    assert not timm_model.timm_model.bn1.training  # the stem is still frozen

    state.epoch = 2.0
    callback.on_step_begin(None, state, control, model=timm_model)
    assert trainable(timm_model) == set(layout.head) | {n for layer in layout.layers[2:] for n in layer}
    state.epoch = 3.5
    callback.on_step_begin(None, state, control, model=timm_model)
    assert trainable(timm_model) == {name for name, _ in timm_model.named_parameters()}
    train_mode_forward(timm_model)
    assert timm_model.timm_model.bn1.training


def test_layerwise_lr_decays_from_head_to_input(timm_model):
    strategy = make("layerwise_lr", timm_model, layer_decay=0.5)
    layout = strategy.layout
    rates = strategy.learning_rates(1e-3)
    assert set(rates) == {name for name, _ in timm_model.named_parameters()}
    assert all(rates[name] == 1e-3 for name in layout.head)
    depth = layout.num_layers
    for index, layer in enumerate(layout.layers):
        for name in layer:
            assert rates[name] == pytest.approx(1e-3 * 0.5 ** (depth - index))
    assert rates[layout.layers[0][0]] == pytest.approx(1e-3 / 64)
    assert rates[layout.layers[-1][0]] == pytest.approx(1e-3 / 2)


def test_layerwise_lr_head_lr(bert_model):
    strategy = make("layerwise_lr", bert_model, layer_decay=0.8, head_lr=5e-3)
    rates = strategy.learning_rates(1e-4)
    assert rates["classifier.weight"] == 5e-3
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(1e-4 * 0.8 ** 3)
    assert rates["bert.encoder.layer.1.output.dense.weight"] == pytest.approx(1e-4 * 0.8)
    assert rates["bert.pooler.dense.weight"] == 5e-3  # part of the head


def optimizer_rates(trainer: TransferTrainer, model) -> dict[str, tuple[float, float]]:
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    seen: dict[str, tuple[float, float]] = {}
    for group in trainer.create_optimizer().param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            assert name not in seen, f"{name} in two parameter groups"
            seen[name] = (group["lr"], group["weight_decay"])
    return seen


@pytest.mark.parametrize("name,options", [("layerwise_lr", {"layer_decay": 0.5, "head_lr": 2e-3}),
                                          ("linear_probe", {}), ("full", {})])
def test_transfer_trainer_param_groups_follow_strategy(tmp_path, bert_model, name, options):
    strategy = make(name, bert_model, **options)
    strategy.prepare(bert_model)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", learning_rate=1e-3, weight_decay=0.01)
    trainer = TransferTrainer(model=bert_model, args=args, strategy=strategy)
    seen = optimizer_rates(trainer, bert_model)
    assert set(seen) == {n for n, _ in bert_model.named_parameters()}  # frozen ones included for later unfreezing
    expected = strategy.learning_rates(1e-3)
    decay = set(trainer.get_decay_parameter_names(bert_model))
    for parameter_name, (lr, weight_decay) in seen.items():
        assert lr == pytest.approx(expected[parameter_name]), parameter_name
        assert weight_decay == (0.01 if parameter_name in decay else 0.0), parameter_name
    assert seen["bert.encoder.layer.0.attention.self.query.bias"][1] == 0.0
    assert seen["bert.encoder.layer.0.attention.self.query.weight"][1] == 0.01
    assert trainer.create_optimizer() is trainer.optimizer


def test_linear_probe_under_trainer_changes_only_the_head(tmp_path, timm_model):
    """A few real Trainer steps: backbone weights and BatchNorm statistics stay as they were."""
    strategy = make("linear_probe", timm_model)
    strategy.prepare(timm_model)
    before = {name: tensor.clone() for name, tensor in timm_model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    dataset = [{"pixel_values": torch.randn(3, 32, 32, generator=generator), "labels": i % 3} for i in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", max_steps=2, per_device_train_batch_size=4,
                             learning_rate=1e-2, save_strategy="no", logging_strategy="no", use_cpu=True,
                             dataloader_num_workers=0)
    TransferTrainer(model=timm_model, args=args, train_dataset=dataset, strategy=strategy).train()
    after = timm_model.state_dict()
    head = set(strategy.layout.head)
    changed = {name for name in before if not torch.equal(before[name], after[name].cpu())}
    assert changed == head
