"""``data.class_weights``: the weighted training loss on every path, ``balanced`` weights, errors, metrics and card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from datasets import ClassLabel, Dataset, Features
from torch.nn import functional as F
from transformers import AutoModelForSequenceClassification, TrainingArguments

from conftest import make_sentences, write_text_csv
from test_bad_inputs import Case, Models, run_case, text_recipe
from hf_transfer import Recipe, finetune
from hf_transfer.data.prepare import LABEL, PreparedData
from hf_transfer.features import CachedHeadModel, FirstTokenHead
from hf_transfer.methods import Method
from hf_transfer.models.layout import discover_layout
from hf_transfer.strategies import create_strategy, get_strategy
from hf_transfer.training.run import resolve_class_weights
from hf_transfer.training.trainer import TransferTrainer, soft_target_cross_entropy

WEIGHTS = [0.25, 3.0]


def no_dropout_bert(directory):
    return AutoModelForSequenceClassification.from_pretrained(
        directory, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def trainer_for(model, tmp_path, layout_of=None, **kwargs) -> TransferTrainer:
    strategy = create_strategy("full", get_strategy("full").Options(), discover_layout(layout_of or model))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    return TransferTrainer(model=model, args=args, strategy=strategy, **kwargs)


def text_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, 40, (6, 9), generator=generator),
            "attention_mask": torch.ones(6, 9, dtype=torch.long),
            "labels": torch.tensor([0, 0, 0, 0, 1, 1])}


def test_weighted_loss_is_torchs_weighted_cross_entropy_and_evaluation_stays_plain(tiny_bert_dir, tmp_path):
    model = no_dropout_bert(tiny_bert_dir)
    trainer = trainer_for(model, tmp_path, class_weights=WEIGHTS)
    batch = text_batch()
    model.train()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = F.cross_entropy(logits, batch["labels"], weight=torch.tensor(WEIGHTS))
    loss = trainer.compute_loss(model, dict(batch))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(loss, F.cross_entropy(logits, batch["labels"]), atol=1e-4)  # the weights matter
    loss.backward()  # a real training loss: gradients reach the model
    assert model.classifier.weight.grad is not None
    assert trainer.loss_is_scaled_for_ga is False  # a per-batch mean: Trainer divides by accumulation steps

    model.eval()  # evaluation: the model's own, unweighted loss
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(model, dict(batch)), F.cross_entropy(logits, batch["labels"]),
                              atol=1e-5)


def test_cached_head_is_weighted_from_its_logits(tiny_bert_dir, tmp_path):
    model = no_dropout_bert(tiny_bert_dir)
    head = CachedHeadModel(model, FirstTokenHead())
    trainer = trainer_for(head, tmp_path, layout_of=model, class_weights=WEIGHTS)
    features = torch.randn(6, 1, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 1, 1, 1, 1])
    head.train()
    logits = head(features).logits
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(WEIGHTS))
    own = head(features, labels).loss  # CachedHeadModel's own loss is unweighted
    assert torch.allclose(own, F.cross_entropy(logits, labels))
    loss = trainer.compute_loss(head, {"features": features, "labels": labels})
    assert torch.allclose(loss, expected, atol=1e-6) and not torch.allclose(loss, own, atol=1e-4)


class ExtraTerm(Method):
    name = "extra-term"

    def loss_terms(self, model, inputs, outputs, ce):
        return {"ce": 0.5 * ce, "extra": ce.new_tensor(2.0)}


def test_methods_add_their_terms_to_the_weighted_ce(tiny_bert_dir, tmp_path):
    model = no_dropout_bert(tiny_bert_dir)
    trainer = trainer_for(model, tmp_path, class_weights=WEIGHTS, method=ExtraTerm(None))
    batch = text_batch()
    model.train()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = F.cross_entropy(logits, batch["labels"], weight=torch.tensor(WEIGHTS))
    loss = trainer.compute_loss(model, dict(batch))
    assert torch.allclose(loss, 0.5 * expected + 2.0, atol=1e-6)
    assert torch.allclose(trainer._term_sums["ce"], 0.5 * expected.detach(), atol=1e-6)


def test_soft_targets_are_weighted_too_and_one_hot_ones_match_torch(tiny_bert_dir, tmp_path):
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 2, generator=generator)
    labels = torch.tensor([0, 1, 1, 0])
    weight = torch.tensor(WEIGHTS)
    one_hot = F.one_hot(labels, 2).float()
    assert torch.allclose(soft_target_cross_entropy(logits, one_hot, weight),
                          F.cross_entropy(logits, labels, weight=weight), atol=1e-6)
    assert torch.allclose(soft_target_cross_entropy(logits, one_hot), F.cross_entropy(logits, labels), atol=1e-6)
    soft = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    expected = (-(soft * weight) * F.log_softmax(logits, -1)).sum() / (soft * weight).sum()
    assert torch.allclose(soft_target_cross_entropy(logits, soft, weight), expected, atol=1e-6)

    # the trainer's mixup path: the task's mixing gives model inputs and soft targets
    model = no_dropout_bert(tiny_bert_dir)
    batch = text_batch()
    targets = torch.tensor([[0.6, 0.4]] * 3 + [[0.1, 0.9]] * 3)

    def mixup(inputs):
        return {key: value for key, value in inputs.items() if key != "labels"}, targets

    trainer = trainer_for(model, tmp_path, class_weights=WEIGHTS, mixup=mixup)
    model.train()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(trainer.compute_loss(model, dict(batch)),
                          soft_target_cross_entropy(logits, targets, weight), atol=1e-6)


def prepared(labels: list[int], names: list[str]) -> PreparedData:
    features = Features({LABEL: ClassLabel(names=names)})
    train = Dataset.from_dict({LABEL: labels}, features=features)
    return PreparedData(train=train, validation=train, test=None, label_names=names)


def test_balanced_weights_are_scikit_learns_on_the_train_split_and_absent_labels_get_zero(caplog):
    from sklearn.utils.class_weight import compute_class_weight

    labels = [0] * 12 + [1] * 3 + [3] * 1  # "c" has no training example
    data = prepared(labels, ["a", "b", "c", "d"])
    weights = resolve_class_weights("balanced", data)
    present = np.array([0, 1, 3])
    expected = compute_class_weight("balanced", classes=present, y=np.array(labels))
    assert list(weights) == ["a", "b", "c", "d"]
    assert [weights[n] for n in ("a", "b", "d")] == pytest.approx(expected, abs=1e-6)
    assert weights["a"] == pytest.approx(16 / (3 * 12), abs=1e-6) and weights["c"] == 0.0
    assert "no training example" in caplog.text and "c" in caplog.text
    assert resolve_class_weights(None, data) is None
    assert resolve_class_weights([1, 2, 0, 4], data) == {"a": 1.0, "b": 2.0, "c": 0.0, "d": 4.0}


def wrong_length(root, models: Models) -> dict:
    recipe = text_recipe(root, models)
    recipe["data"]["class_weights"] = [1.0, 2.0, 3.0]
    return recipe


def test_a_list_of_the_wrong_length_is_one_error_before_training(tiny_bert_dir, tiny_timm_dir, tmp_path, capsys):
    case = Case("class_weights_wrong_length", wrong_length,
                ("'data.class_weights'", "3 weight", "2 labels", "(negative, positive)", "one weight per label"))
    run_case("finetune", case, Models(bert=tiny_bert_dir, timm=tiny_timm_dir), tmp_path, capsys)


@pytest.mark.parametrize("strategy", ["full", "linear_probe"])
def test_balanced_run_writes_its_weights_to_metrics_and_card(strategy, tiny_bert_dir, tmp_path):
    rows = [row for row in make_sentences(48, seed=0) if row[1] == "positive" or len(row[0]) % 3 == 0][:30]
    data = tmp_path / "data"
    data.mkdir()
    write_text_csv(data / "train.csv", rows)
    write_text_csv(data / "test.csv", make_sentences(8, seed=1))
    out = tmp_path / "out"
    recipe = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
              "data": {"path": str(data), "max_length": 16, "class_weights": "balanced"},
              "strategy": {"name": strategy},
              "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "disable_tqdm": True},
              "output": {"dir": str(out)}}
    result = finetune(Recipe.from_dict(recipe))

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    weights = metrics["train"]["class_weights"]
    assert weights == result.metrics["train"]["class_weights"]
    assert list(weights) == metrics["labels"] == ["negative", "positive"]
    train_labels = result.trainer.train_dataset["labels"] if strategy == "full" else None
    if train_labels is not None:  # n / (classes x count) over the prepared train split
        counts = np.bincount(np.asarray(train_labels), minlength=2)
        assert [weights[n] for n in metrics["labels"]] == pytest.approx(len(train_labels) / (2 * counts), abs=1e-5)
    assert weights["negative"] > 1 > weights["positive"]  # fewer negatives: they weigh more
    assert ("feature_cache" in metrics) == (strategy == "linear_probe")  # the cached-head path did train weighted
    card = (out / "README.md").read_text(encoding="utf-8")
    line = next(line for line in card.splitlines() if line.startswith("- **Class weights:**"))
    assert f"negative {weights['negative']:.4g}, positive {weights['positive']:.4g} (balanced" in line
    assert yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))["data"]["class_weights"] == "balanced"


def test_mixup_with_a_method_and_dann_train_weighted_end_to_end(tiny_timm_dir, tiny_bert_dir, image_folder_data,
                                                                 text_csv_data, tmp_path, monkeypatch):
    import hf_transfer.training.trainer as trainer_module

    seen: list[tuple[str, list[float]]] = []
    soft, weight = trainer_module.soft_target_cross_entropy, TransferTrainer._weight

    def spied_soft(logits, targets, weight=None):
        seen.append(("soft", weight.tolist()))
        return soft(logits, targets, weight)

    def spied_weight(self, logits):
        seen.append(("hard", self.class_weights.tolist()))
        return weight(self, logits)

    monkeypatch.setattr(trainer_module, "soft_target_cross_entropy", spied_soft)
    monkeypatch.setattr(TransferTrainer, "_weight", spied_weight)
    image = finetune(Recipe.from_dict({  # mixup soft targets and the l2sp term on top of the weighted ce
        "task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
        "data": {"path": str(image_folder_data), "image_size": 32, "class_weights": [1.0, 2.0, 0.5],
                 "augmentation": {"random_resized_crop": False, "mixup_alpha": 0.4}},
        "method": {"name": "l2sp", "alpha": 0.5},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "dataloader_num_workers": 0,
                     "logging_steps": 1, "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "image")}}))
    labels = image.metrics["labels"]
    assert image.metrics["train"]["class_weights"] == dict(zip(labels, [1.0, 2.0, 0.5]))
    assert ("soft", [1.0, 2.0, 0.5]) in seen
    assert all("loss_ce" in e and "loss_l2sp" in e for e in image.trainer.state.log_history if "loss" in e)

    seen.clear()
    target = tmp_path / "target"
    target.mkdir()
    write_text_csv(target / "train.csv", make_sentences(16, seed=3))
    write_text_csv(target / "test.csv", make_sentences(6, seed=4))
    text = finetune(Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 16, "class_weights": [3.0, 1.0]},
        "method": {"name": "dann", "target": {"path": str(target)}, "hidden_size": 8},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "logging_steps": 1,
                     "disable_tqdm": True},
        "output": {"dir": str(tmp_path / "text")}}))
    steps = text.metrics["train"]["steps"]
    assert seen == [("hard", [3.0, 1.0])] * steps  # every training step's ce, and no evaluation loss
    assert any("loss_adv" in e and "loss_ce" in e for e in text.trainer.state.log_history)
