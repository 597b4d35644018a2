"""L2-SP and distillation through ``finetune`` on tiny models: terms logged, outputs loadable, teacher unsaved."""

from __future__ import annotations

import json

from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertTokenizerFast, pipeline

from hf_transfer import Recipe, finetune


def test_l2sp_image_run_logs_its_term_and_writes_a_normal_folder(tiny_timm_dir, image_folder_data, tmp_path):
    out = tmp_path / "run"
    result = finetune(Recipe.from_dict({
        "task": "image-classification", "model": {"name_or_path": str(tiny_timm_dir)},
        "data": {"path": str(image_folder_data), "image_size": 32, "augmentation": {"random_resized_crop": False}},
        "strategy": {"name": "layerwise_lr"}, "method": {"name": "l2sp", "alpha": 0.5},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 5e-3,
                     "weight_decay": 0.0, "dataloader_num_workers": 0, "logging_steps": 1, "disable_tqdm": True},
        "output": {"dir": str(out)}}))
    logged = [e for e in result.trainer.state.log_history if "loss" in e]
    assert logged and all(e["loss_l2sp"] >= 0 and "loss_ce" in e for e in logged)
    assert any(e["loss_l2sp"] > 0 for e in logged)  # the weights left the source point
    assert Recipe.from_yaml(out / "recipe.yaml").method.options.alpha == 0.5
    assert pipeline("image-classification", model=str(out)).model.config.num_labels == 3


def test_distillation_text_run_with_cached_teacher(tiny_bert_dir, text_csv_data, tmp_path):
    teacher = tmp_path / "teacher"
    AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    ).save_pretrained(teacher)
    BertTokenizerFast.from_pretrained(tiny_bert_dir).save_pretrained(teacher)
    out = tmp_path / "run"
    result = finetune(Recipe.from_dict({
        "task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
        "data": {"path": str(text_csv_data), "max_length": 32},
        "method": {"name": "distillation", "teacher": str(teacher), "alpha": 0.5, "cache_teacher_logits": True},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                     "logging_steps": 1, "disable_tqdm": True},
        "output": {"dir": str(out)}}))
    method = result.trainer.method
    distinct = {tuple(ids) for ids in result.trainer.train_dataset["input_ids"]}
    assert len(method.cache) == len(distinct)  # one entry per distinct training sentence, reused in epoch 2
    assert all("loss_kd" in e for e in result.trainer.state.log_history if "loss" in e)
    saved = load_file(out / "model.safetensors")
    assert len(saved) == len(result.model.state_dict())
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" in metrics
    assert pipeline("text-classification", model=str(out))("a great film")[0]["label"] in {"negative", "positive"}
