"""L2-SP: the gradient of the penalty, and its place in the Trainer's loss."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, TimmWrapperForImageClassification

from hf_transfer.methods import create_method, get_method
from hf_transfer.methods.base import classifier_layer
from hf_transfer.models.layout import discover_layout


def load(kind: str, tiny_timm_dir, tiny_bert_dir):
    torch.manual_seed(0)
    if kind == "timm":
        return TimmWrapperForImageClassification.from_pretrained(tiny_timm_dir)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)


def perturb(model) -> None:
    """Move every weight away from the source point, as training would."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)


@pytest.mark.parametrize("kind", ["timm", "bert"])
def test_gradient_is_alpha_times_distance_to_source_and_beta_times_new_weights(kind, tiny_timm_dir, tiny_bert_dir):
    model = load(kind, tiny_timm_dir, tiny_bert_dir)
    source = {name: p.detach().clone() for name, p in model.named_parameters()}
    method = create_method("l2sp", get_method("l2sp").Options(alpha=0.3, beta=0.05))
    method.attach(model)
    perturb(model)
    model.zero_grad()
    method.penalty().backward()
    layout = discover_layout(model)
    new = {f"{name}.{p}" for name, module in model.named_modules() if module is classifier_layer(model, layout)
           for p, _ in module.named_parameters()}
    assert new and len(new) == 2
    for name, parameter in model.named_parameters():
        expected = 0.05 * parameter.detach() if name in new else 0.3 * (parameter.detach() - source[name])
        torch.testing.assert_close(parameter.grad, expected, msg=name)


def test_bert_pooler_is_pulled_to_its_pretrained_values(tiny_bert_dir):
    """The pooler sits in the layout's head (for probing) but is transferred, not new."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    method = create_method("l2sp", get_method("l2sp").Options())
    method.attach(model)
    transferred = {id(p) for p, _ in method.transferred}
    assert id(model.bert.pooler.dense.weight) in transferred
    assert [id(p) for p in method.new] == [id(model.classifier.weight), id(model.classifier.bias)]


def test_penalty_is_zero_at_the_source_and_frozen_weights_are_skipped(tiny_timm_dir):
    model = TimmWrapperForImageClassification.from_pretrained(tiny_timm_dir)
    method = create_method("l2sp", get_method("l2sp").Options(alpha=1.0, beta=0.0))
    method.attach(model)
    assert float(method.penalty().detach()) == 0.0
    perturb(model)
    moved = float(method.penalty().detach())
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    assert moved > 0 and float(method.penalty().detach()) == 0.0


def test_trainer_loss_adds_the_penalty_and_its_gradient_on_a_frozen_batch(tiny_bert_dir, tmp_path):
    """Through ``TransferTrainer.compute_loss``: grad(CE + L2-SP) - grad(CE) = alpha (w - w0) on the backbone."""
    from transformers import TrainingArguments

    from hf_transfer.strategies import create_strategy, get_strategy
    from hf_transfer.training.trainer import TransferTrainer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    method = create_method("l2sp", get_method("l2sp").Options(alpha=0.2, beta=0.0))
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    strategy = create_strategy("full", get_strategy("full").Options(), discover_layout(model))

    def trainer(with_method: bool) -> TransferTrainer:
        return TransferTrainer(model=model, args=args, strategy=strategy, method=method if with_method else None)

    source = {name: p.detach().clone() for name, p in model.named_parameters()}
    method.attach(model)
    perturb(model)
    batch = {"input_ids": torch.randint(5, 30, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    model.train()
    grads = {}
    for with_method in (False, True):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks in both passes
        loss = trainer(with_method).compute_loss(model, dict(batch))
        loss.backward()
        grads[with_method] = {name: p.grad.clone() for name, p in model.named_parameters()}
    name = "bert.encoder.layer.0.attention.self.query.weight"
    parameter = dict(model.named_parameters())[name]
    torch.testing.assert_close(grads[True][name] - grads[False][name], 0.2 * (parameter.detach() - source[name]))


def test_trainer_logs_each_loss_term(tiny_bert_dir, tmp_path):
    from transformers import TrainingArguments

    from hf_transfer.strategies import create_strategy, get_strategy
    from hf_transfer.training.trainer import TransferTrainer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).train()
    method = create_method("l2sp", get_method("l2sp").Options(alpha=1.0))
    method.attach(model)
    perturb(model)
    trainer = TransferTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]),
                              strategy=create_strategy("full", get_strategy("full").Options(), discover_layout(model)),
                              method=method)
    batch = {"input_ids": torch.randint(5, 30, (2, 7)), "labels": torch.tensor([0, 1])}
    total = float(trainer.compute_loss(model, dict(batch)).detach())
    trainer.log({"loss": total})
    logged = trainer.state.log_history[-1]
    assert logged["loss_l2sp"] > 0 and logged["loss_ce"] > 0
    assert logged["loss_ce"] + logged["loss_l2sp"] == pytest.approx(total, rel=1e-5)
