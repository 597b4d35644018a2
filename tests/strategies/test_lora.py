"""``lora`` (peft adapters, saved merged) and ``bitfit`` (biases + head) on tiny BERT and timm models."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import (AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer,
                          BertTokenizerFast, TimmWrapperForImageClassification, Trainer, pipeline)

from conftest import make_sentences, write_text_csv
from hf_transfer import Recipe, finetune
from hf_transfer.errors import RecipeError
from hf_transfer.models.layout import discover_layout
from hf_transfer.strategies import STRATEGIES, create_strategy, get_strategy
from hf_transfer.training.run import run_single

LORA = re.compile(r"\.lora_[AB]\.default\.weight$")


class Crash(Exception):
    """A failure the tests inject."""




def make(name: str, model, **options):
    return create_strategy(name, get_strategy(name).Options(**options), discover_layout(model))


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def bert_batch() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor([[2, 5, 6, 7, 3], [2, 15, 25, 8, 3]]),
            "attention_mask": torch.ones(2, 5, dtype=torch.long), "labels": torch.tensor([0, 1])}


def timm_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(4, 3, 32, 32, generator=generator), "labels": torch.tensor([0, 1, 2, 0])}


def one_step(model, batch) -> dict[str, torch.Tensor]:
    """One SGD step on a batch; the parameters before it."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    F.cross_entropy(logits, labels).backward()
    optimizer.step()
    return before


def changed(model, before) -> set[str]:
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


# ----------------------------------------------------------------------------- options and errors
def test_registered_with_documented_defaults():
    assert {"lora", "bitfit"} <= set(STRATEGIES)
    options = get_strategy("lora").Options()
    assert (options.r, options.alpha, options.dropout, options.target_modules, options.save_adapter) == \
        (8, 16, 0.0, None, False)
    assert not get_strategy("lora").freezes_backbone and not get_strategy("bitfit").freezes_backbone
    # the strategies that existed before keep their order
    assert list(STRATEGIES)[:5] == ["full", "gradual_unfreeze", "layerwise_lr", "linear_probe", "partial"]


def test_unknown_option_is_a_one_line_error():
    with pytest.raises(RecipeError) as error:
        Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": "x"}, "data": {"path": "y"},
                          "strategy": {"name": "lora", "rank": 4}})
    message = str(error.value)
    assert message.startswith("Unknown key 'strategy.rank'") and "\n" not in message
    assert "alpha, dropout, r, save_adapter, target_modules" in message
    with pytest.raises(RecipeError, match=r"'strategy\.r' must be an integer >= 1; got 0"):
        Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": "x"}, "data": {"path": "y"},
                          "strategy": {"name": "lora", "r": 0}})


def test_options_from_overrides():
    recipe = Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": "x"}, "data": {"path": "y"},
                               "strategy": {"name": "lora", "r": "4", "target_modules": "query, value",
                                            "save_adapter": "true"}})
    assert recipe.strategy.options.r == 4 and recipe.strategy.options.target_modules == ["query", "value"]
    assert recipe.strategy.to_mapping()["target_modules"] == ["query", "value"]


def test_target_modules_matching_nothing_names_the_linear_modules(bert_model):
    with pytest.raises(RecipeError) as error:
        make("lora", bert_model, target_modules=["qkv"]).prepare(bert_model)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("'strategy.target_modules' entry 'qkv' matches no module of the backbone")
    for name in ("attention.self.query", "attention.self.value", "intermediate.dense", "output.dense"):
        assert name in message
    assert "classifier" not in message  # the head is never a target


def test_target_modules_on_an_unsupported_module_is_an_error(bert_model):
    with pytest.raises(RecipeError, match=r"selects modules LoRA cannot adapt: .*LayerNorm \(LayerNorm\)"):
        make("lora", bert_model, target_modules=["LayerNorm"]).prepare(bert_model)


def test_rank_wider_than_every_layer_is_an_error(bert_model):
    with pytest.raises(RecipeError, match=r"no Linear or 1x1-Conv2d layer wider than r=64 .*lower 'strategy\.r'"):
        make("lora", bert_model, r=64).prepare(bert_model)


# ----------------------------------------------------------------------------- which parameters train
def test_bert_adapters_on_every_attention_and_mlp_projection(bert_model):
    head = set(discover_layout(bert_model).head)
    linears = {name: (m.in_features, m.out_features) for name, m in bert_model.named_modules()
               if isinstance(m, torch.nn.Linear)}
    total = sum(p.numel() for p in bert_model.parameters())
    strategy = make("lora", bert_model)
    strategy.prepare(bert_model)
    blocks = [f"bert.encoder.layer.{i}.{name}" for i in range(2) for name in
              ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
               "intermediate.dense", "output.dense")]
    assert strategy.targets == blocks  # not the pooler or the classifier (the head)
    names = trainable(bert_model)
    assert {n for n in names if not LORA.search(n)} == head
    assert {n.rsplit(".lora_", 1)[0] for n in names if LORA.search(n)} == set(blocks)
    lora_count = sum(8 * (linears[name][0] + linears[name][1]) for name in blocks)
    head_count = sum(p.numel() for n, p in bert_model.named_parameters() if n in head)
    assert sum(p.numel() for p in bert_model.parameters() if p.requires_grad) == lora_count + head_count
    assert lora_count + head_count < total / 2  # r=8 of a 32-wide model; far less at real sizes


def test_timm_adapters_on_pointwise_convolutions(timm_model):
    head = set(discover_layout(timm_model).head)
    assert head == {"timm_model.classifier.weight", "timm_model.classifier.bias"}
    strategy = make("lora", timm_model)
    strategy.prepare(timm_model)
    # 1x1 convolutions wider than r=8; not the 3x3 stem or expansions, the depthwise convs, the 8-channel
    # squeeze-excitation of block 3 (a rank-8 update would be no smaller than the layer) or the classifier
    assert strategy.targets == ["timm_model.blocks.1.0.conv_pwl", "timm_model.blocks.2.0.conv_pwl",
                                "timm_model.blocks.3.0.conv_pw", "timm_model.blocks.3.0.conv_pwl",
                                "timm_model.blocks.4.0.conv_pw", "timm_model.blocks.4.0.se.conv_reduce",
                                "timm_model.blocks.4.0.se.conv_expand", "timm_model.blocks.4.0.conv_pwl",
                                "timm_model.conv_head"]
    names = trainable(timm_model)
    assert {n for n in names if not LORA.search(n)} == head
    assert {n.rsplit(".lora_", 1)[0] for n in names if LORA.search(n)} == set(strategy.targets)
    # LoRA parameters join their layer: per-part learning rates reach them
    assert "timm_model.conv_head.lora_A.default.weight" in strategy.layout.parts["backbone"]


def test_explicit_target_modules(bert_model):
    strategy = make("lora", bert_model, target_modules=["query", "attention.self.value"], r=4)
    strategy.prepare(bert_model)
    assert strategy.targets == [f"bert.encoder.layer.{i}.attention.self.{n}" for i in range(2)
                                for n in ("query", "value")]
    assert len([n for n in trainable(bert_model) if LORA.search(n)]) == 8


@pytest.mark.parametrize("which", ["bert", "timm"])
def test_a_training_step_changes_only_adapters_and_head(which, bert_model, timm_model):
    model, batch = (bert_model, bert_batch()) if which == "bert" else (timm_model, timm_batch())
    strategy = make("lora", model)
    strategy.prepare(model)
    before = one_step(model, batch)
    moved = changed(model, before)
    assert moved <= trainable(model)
    assert set(strategy.layout.head) <= moved
    assert any(".lora_B." in name for name in moved)  # B starts at zero and moves first


@pytest.mark.parametrize("which", ["bert", "timm"])
def test_merged_model_has_original_names_and_same_logits(which, bert_model, timm_model):
    model, batch = (bert_model, bert_batch()) if which == "bert" else (timm_model, timm_batch())
    original = set(model.state_dict())
    strategy = make("lora", model, dropout=0.1)
    strategy.prepare(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 0.5)  # a trained adapter
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        adapted = model(**inputs).logits
    merged = strategy.export_model(model)
    assert merged is model and set(merged.state_dict()) == original
    assert not hasattr(merged, "peft_config")
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, adapted, atol=1e-5)


def test_bitfit_trains_biases_and_head(bert_model, timm_model):
    for model, batch in ((bert_model, bert_batch()), (timm_model, timm_batch())):
        layout = discover_layout(model)
        strategy = make("bitfit", model)
        strategy.prepare(model)
        biases = {n for n in layout.backbone() if n.endswith(".bias")}
        assert biases and trainable(model) == biases | set(layout.head)
        before = one_step(model, batch)
        assert changed(model, before) <= biases | set(layout.head)
    assert "bert.encoder.layer.0.attention.self.query.bias" in trainable(bert_model)
    assert "bert.embeddings.LayerNorm.bias" in trainable(bert_model)
    assert "timm_model.bn1.bias" in trainable(timm_model) and "timm_model.bn1.weight" not in trainable(timm_model)


# ----------------------------------------------------------------------------- whole runs
TRAINING = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1,
            "disable_tqdm": True, "dataloader_num_workers": 0}


def logits_of(model, inputs) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(**{k: v.to(device) for k, v in inputs.items()}).logits.cpu()


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft's PeftModel, transformers 5
def test_text_run_saves_merged_weights_and_the_adapter(tiny_bert_dir, text_csv_data, tmp_path):
    out = tmp_path / "run"
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert_dir)
    inputs = dict(tokenizer(["a great film", "the worst and most boring plot", "it was fine"], padding=True,
                            return_tensors="pt"))
    seen = {}

    def capture(build, metrics):  # after training and evaluation, before the export merges the adapters
        seen["names"] = {name for name, _ in build.model.named_parameters()}
        seen["logits"] = logits_of(build.model, inputs)
        return {}

    recipe = Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 32},
        "strategy": {"name": "lora", "r": 4, "save_adapter": True}, "training": TRAINING,
        "output": {"dir": str(out)}})
    result = run_single(recipe, extra_metrics=capture)
    assert any(LORA.search(name) for name in seen["names"])
    assert "test" in result.metrics

    saved = load_file(out / "model.safetensors")
    assert not [key for key in saved if "lora_" in key or "base_layer" in key]
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert set(reloaded.state_dict()) == set(AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir).state_dict())
    assert torch.allclose(logits_of(reloaded, inputs), seen["logits"], atol=1e-5)
    assert not torch.allclose(logits_of(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), inputs),
                              seen["logits"], atol=1e-3)  # training did change the function
    assert pipeline("text-classification", model=str(out))("a great film")[0]["label"] in {"negative", "positive"}
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}

    # adapter/: peft's format, listed by the ownership marker, and the same function on the pretrained model
    from peft import PeftModel

    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16
    assert sorted(config["modules_to_save"]) == ["bert.pooler.dense", "classifier"]
    assert "adapter" in json.loads((out / ".hf_transfer_run.json").read_text())["entries"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    adapted = PeftModel.from_pretrained(base, out / "adapter")
    assert torch.allclose(logits_of(adapted, inputs), seen["logits"], atol=1e-5)
    assert not [p for p in out.iterdir() if p.name.startswith(".adapter.")]


def test_image_run_saves_merged_weights(tiny_timm_dir, image_folder_data, tmp_path):
    out = tmp_path / "run"
    inputs = {"pixel_values": timm_batch()["pixel_values"]}
    seen = {}

    def capture(build, metrics):
        seen["logits"] = logits_of(build.model, inputs)
        return {}

    recipe = Recipe.from_dict({
        "task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
        "data": {"path": str(image_folder_data), "image_size": 32, "augmentation": {"random_resized_crop": False}},
        "strategy": {"name": "lora"}, "training": TRAINING, "output": {"dir": str(out)}})
    run_single(recipe, extra_metrics=capture)
    assert not (out / "adapter").exists()
    saved = load_file(out / "model.safetensors")
    assert not [key for key in saved if "lora_" in key or "base_layer" in key]
    reloaded = AutoModelForImageClassification.from_pretrained(out)
    assert isinstance(reloaded, TimmWrapperForImageClassification)
    assert torch.allclose(logits_of(reloaded, inputs), seen["logits"], atol=1e-4)
    assert pipeline("image-classification", model=str(out)).model.config.num_labels == 3


def test_adapter_is_written_with_the_model_and_goes_with_an_overwritten_run(tiny_bert_dir, text_csv_data,
                                                                                 tmp_path, monkeypatch):
    import hf_transfer.training.run as run_module

    out = tmp_path / "run"

    def recipe(**strategy):
        return Recipe.from_dict({
            "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
            "data": {"path": str(text_csv_data), "max_length": 16}, "strategy": {"name": "lora", **strategy},
            "training": {**TRAINING, "num_train_epochs": 1}, "output": {"dir": str(out), "overwrite": True}})

    def failing(*args, **kwargs):
        raise Crash("disk full")

    monkeypatch.setattr(run_module, "write_run_outputs", failing)
    with pytest.raises(Crash):
        finetune(recipe(save_adapter=True))
    monkeypatch.undo()
    # adapter/ is committed together with the model folder, so a failed export leaves neither behind
    assert not (out / "adapter").exists() and not (out / "metrics.json").exists()

    finetune(recipe(save_adapter=True))  # the unfinished run is ours, adapter/ included: it resumes and finishes
    assert (out / "metrics.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    assert "adapter" in json.loads((out / ".hf_transfer_run.json").read_text())["entries"]
    finetune(recipe())  # replacing the finished run drops its adapter with it
    assert (out / "metrics.json").is_file() and not (out / "adapter").exists()


@pytest.fixture
def text_target(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    write_text_csv(target / "train.csv", make_sentences(24, seed=3))
    write_text_csv(target / "test.csv", make_sentences(8, seed=4))
    return target


@pytest.fixture
def teacher(tiny_bert_dir, tmp_path):
    folder = tmp_path / "teacher"
    AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("strategy, method", [("lora", "l2sp"), ("lora", "distillation"), ("lora", "dann"),
                                              ("bitfit", "l2sp")])
def test_runs_with_every_method(strategy, method, tiny_bert_dir, text_csv_data, text_target, teacher, tmp_path):
    options = {"l2sp": {"alpha": 0.5}, "distillation": {"teacher": str(teacher)},
               "dann": {"target": {"path": str(text_target)}, "hidden_size": 8}}[method]
    out = tmp_path / "run"
    result = finetune(Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 32}, "strategy": {"name": strategy},
        "method": {"name": method, **options},
        "training": {**TRAINING, "num_train_epochs": 1, "weight_decay": 0.0}, "output": {"dir": str(out)}}))
    term = {"l2sp": "loss_l2sp", "distillation": "loss_kd", "dann": "loss_adv"}[method]
    assert any(term in entry for entry in result.trainer.state.log_history)
    assert "feature_cache" not in result.metrics  # the backbone trains: no cached features
    saved = load_file(out / "model.safetensors")
    assert not [key for key in saved if "lora_" in key or "base_layer" in key]
    AutoModelForSequenceClassification.from_pretrained(out)


# ----------------------------------------------------------------------------- resume
TIMING = ("runtime", "per_second", "samples_per_s", "runtime_s", "total_flos")


def without_timing(node):
    if isinstance(node, dict):
        return {k: without_timing(v) for k, v in node.items() if not any(t in k for t in TIMING)}
    if isinstance(node, list):
        return [without_timing(v) for v in node]
    return node


def test_interrupted_lora_run_resumes_with_its_adapters(tiny_bert_dir, text_csv_data, tmp_path, monkeypatch):
    """36 training rows, batch 4: 9 steps an epoch, 18 in all, a checkpoint every 4 steps. A run that crashes at
    step 7 resumes from checkpoint-4 (its LoRA weights included) and ends exactly like an uninterrupted one."""
    def recipe(out):
        return Recipe.from_dict({
            "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
            "data": {"path": str(text_csv_data), "max_length": 16}, "strategy": {"name": "lora", "r": 4},
            "training": {**TRAINING, "per_device_train_batch_size": 4, "seed": 7, "save_strategy": "steps",
                         "save_steps": 4, "load_best_model_at_end": False, "save_total_limit": 2},
            "output": {"dir": str(out), "keep_checkpoints": True}})

    baseline = finetune(recipe(tmp_path / "baseline"))
    out = tmp_path / "run"
    original = Trainer.training_step

    def crashing(self, *args, **kwargs):
        if self.state.global_step == 6:
            raise Crash("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crashing)
    with pytest.raises(Crash):
        finetune(recipe(out))
    steps = []

    def counting(self, *args, **kwargs):
        steps.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", counting)
    checkpoint = load_file(out / "checkpoints" / "checkpoint-4" / "model.safetensors")
    assert any(".lora_B." in key for key in checkpoint)  # the unmerged model, adapters included
    assert not (out / "metrics.json").exists()

    resumed = finetune(recipe(out))
    def history(result):  # every step's loss, grad norm and learning rate, and each evaluation
        # (not the closing train_loss: the Trainer averages it over the steps of the last session only)
        return without_timing([e for e in result.trainer.state.log_history if "train_loss" not in e])

    assert history(resumed) == history(baseline)
    assert resumed.trainer.state.global_step == 18 and steps[0] == 4 and len(steps) == 14  # from checkpoint-4
    assert without_timing(resumed.metrics) == without_timing(baseline.metrics)
    assert torch.equal(load_file(out / "model.safetensors")["classifier.weight"],
                       load_file(tmp_path / "baseline" / "model.safetensors")["classifier.weight"])
