"""DANN with one set of BatchNorm running statistics per domain (``method.batchnorm: per_domain``)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from test_dann_schedule import built, dann_recipe
from hf_transfer import finetune
from hf_transfer.cli import _print_summary
from hf_transfer.methods.dann import SOURCE_STATISTICS_FILE, DomainStatistics


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_each_domain_moves_only_its_own_statistics():
    model = small_net().train()
    model(torch.zeros(2, 3, 6, 6))
    statistics = DomainStatistics(model)
    norm = model[1]
    before = statistics.state_dict("source")
    with statistics.of("target"):
        model(torch.randn(8, 3, 6, 6) * 5 + 3)  # the target pass
        target_mean = norm.running_mean.clone()
    assert statistics.active == "source"
    torch.testing.assert_close(norm.running_mean, before["1.running_mean"])  # the source's untouched
    assert not torch.allclose(target_mean, before["1.running_mean"])
    torch.testing.assert_close(statistics.state_dict("target")["1.running_mean"], target_mean)
    assert int(statistics.state_dict("target")["1.num_batches_tracked"]) == int(before["1.num_batches_tracked"]) + 1
    assert set(before) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert set(before) <= set(model.state_dict())  # the model's own names: load_state_dict(strict=False) reads them

    statistics.load_state_dict("target", before)
    torch.testing.assert_close(statistics.state_dict("target")["1.running_mean"], before["1.running_mean"])
    assert not DomainStatistics(nn.Linear(2, 2))  # nothing to keep per domain


def test_per_domain_run_saves_target_statistics_and_the_sources_beside_them(tiny_timm_dir, image_folder_data,
                                                                            target_images, tmp_path, capsys):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "run"
    result = finetune(dann_recipe(tiny_timm_dir, image_folder_data, target_images, out, batchnorm="per_domain",
                                  adversarial_weight=0, selection="target_entropy",
                                  training={"num_train_epochs": 2}))
    statistics = result.trainer.method.statistics
    assert statistics.active == "target"
    steps = result.trainer.state.global_step
    source, target = statistics.state_dict("source"), statistics.state_dict("target")
    counts = {name: int(source[name]) - int(target[name])
              for name in source if name.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {0}  # source only: a target pass per step all the same
    assert int(next(v for k, v in target.items() if k.endswith("num_batches_tracked"))) >= steps

    saved = load_file(out / SOURCE_STATISTICS_FILE)
    assert saved.keys() == source.keys()
    reloaded = AutoModelForImageClassification.from_pretrained(out).eval()
    buffers = dict(reloaded.named_buffers())
    name = next(k for k in saved if k.endswith("running_mean"))
    torch.testing.assert_close(buffers[name], target[name])  # the saved model holds the target's
    assert not torch.allclose(saved[name], target[name])

    metrics = json.loads((out / "metrics.json").read_text())
    adaptation = metrics["domain_adaptation"]
    assert adaptation["batchnorm"] == "per_domain" and adaptation["saved_statistics"] == "target"
    assert adaptation["target_with_source_statistics"]["split"] == "target_test"

    # The source metrics are what the saved weights score with the source statistics loaded back.
    reloaded.load_state_dict(saved, strict=False)
    trainer = result.trainer
    with statistics.of("source"):
        expected = trainer.predict(result.trainer.eval_dataset).predictions
    trainer.model.load_state_dict(reloaded.state_dict())  # the folder's weights, source statistics included
    torch.testing.assert_close(torch.as_tensor(trainer.predict(trainer.eval_dataset).predictions),
                               torch.as_tensor(expected), atol=1e-5, rtol=1e-4)
    card = (out / "README.md").read_text()
    plain = adaptation["target_with_source_statistics"]["accuracy"]
    assert SOURCE_STATISTICS_FILE in card and f"the same weights score {plain:.2%} on the target" in card
    capsys.readouterr()
    _print_summary(result.metrics, out)
    assert SOURCE_STATISTICS_FILE in capsys.readouterr().out


def test_per_domain_target_passes_use_the_target_statistics(tiny_timm_dir, image_folder_data, target_images,
                                                            tmp_path):
    trainer = built(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run",
                                batchnorm="per_domain"), tmp_path)
    method, model = trainer.method, trainer.model.train()
    assert method._momenta == {} and method.statistics
    trainer.state.max_steps, trainer.state.global_step = 10, 5
    source_before = method.statistics.state_dict("source")
    target_before = method.statistics.state_dict("target")
    batch = next(iter(trainer.get_train_dataloader()))
    ce, outputs = trainer._loss(model, dict(batch), True)
    terms = method.loss_terms(model, batch, outputs, ce)
    assert "adv" in terms and terms["ce"].item() == ce.item()
    after_source, after_target = method.statistics.state_dict("source"), method.statistics.state_dict("target")
    tracked = [k for k in source_before if k.endswith("num_batches_tracked")]
    assert all(int(after_source[k]) == int(source_before[k]) + 1 for k in tracked)  # the Trainer's source pass
    assert all(int(after_target[k]) == int(target_before[k]) + 1 for k in tracked)  # the target pass


def test_source_only_comparison_shows_the_baseline_with_and_without_target_statistics(
        tiny_timm_dir, image_folder_data, target_images, tmp_path, capsys):
    out = tmp_path / "run"
    result = finetune(dann_recipe(tiny_timm_dir, image_folder_data, target_images, out, batchnorm="per_domain",
                                  training={"num_train_epochs": 1}, evaluation={"compare_source_only": True}))
    reference = json.loads((out / "source_only" / "metrics.json").read_text())
    assert (out / "source_only" / SOURCE_STATISTICS_FILE).is_file()
    plain = reference["domain_adaptation"]["target_with_source_statistics"]
    baseline = result.metrics["source_only"]
    assert baseline["target_with_source_statistics"] == plain
    assert baseline["target_test"] == reference["target_test"]
    card = (out / "README.md").read_text()
    rows = [line for line in card.splitlines() if line.startswith("| source only")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "source only, source BatchNorm statistics (no adaptation)",
        "source only (same recipe, `adversarial_weight: 0`, target BatchNorm statistics)"]
    assert f"{plain['accuracy']:.2%}" in rows[0] and f"{reference['target_test']['accuracy']:.2%}" in rows[1]
    capsys.readouterr()
    _print_summary(result.metrics, out)
    printed = capsys.readouterr().out
    assert "source only, no adapt." in printed and "source only, target BN" in printed


def test_checkpoints_carry_the_target_statistics_back_to_the_best_model(tiny_timm_dir, image_folder_data,
                                                                        target_images, tmp_path):
    from types import SimpleNamespace

    from hf_transfer.methods.dann import TARGET_STATISTICS_FILE, TargetStatisticsCheckpoint

    trainer = built(dann_recipe(tiny_timm_dir, image_folder_data, target_images, tmp_path / "run",
                                batchnorm="per_domain"), tmp_path)
    method = trainer.method
    callback = next(c for c in method.callbacks() if isinstance(c, TargetStatisticsCheckpoint))
    args = SimpleNamespace(output_dir=str(tmp_path / "ckpt"), load_best_model_at_end=True)
    folder = tmp_path / "ckpt" / "checkpoint-3"
    folder.mkdir(parents=True)
    state = SimpleNamespace(global_step=3, is_world_process_zero=True, best_model_checkpoint=str(folder))
    callback.on_save(args, state, None)
    saved = method.statistics.state_dict("target")
    assert (folder / TARGET_STATISTICS_FILE).is_file()
    with method.statistics.of("target"), torch.no_grad():
        for layer in method.statistics.layers.values():
            layer.running_mean.add_(1.0)  # training went on after the best checkpoint
    name = next(k for k in saved if k.endswith("running_mean"))
    assert not torch.equal(method.statistics.state_dict("target")[name], saved[name])
    callback.on_train_end(args, state, None)
    assert torch.equal(method.statistics.state_dict("target")[name], saved[name])
    assert method.statistics.active == "source"
    callback.on_train_begin(args, SimpleNamespace(global_step=3), None)  # a resumed run reads the same file
    assert torch.equal(method.statistics.state_dict("target")[name], saved[name])


def test_the_old_joint_forward_key_says_what_replaced_it(tmp_path):
    from hf_transfer import Recipe
    from hf_transfer.errors import RecipeError

    recipe = {"task": "image-classification", "model": {"name_or_path": "some/model"}, "data": {"path": "d"},
              "method": {"name": "dann", "target": {"path": "t"}, "joint_forward": False}}
    with pytest.raises(RecipeError, match=r"^'method.joint_forward' was replaced: write method.batchnorm: joint"):
        Recipe.from_dict(recipe)
    del recipe["method"]["joint_forward"]
    with pytest.raises(RecipeError, match="'method.joint_forward' was replaced"):
        Recipe.from_dict(recipe).replace({"method.joint_forward": True})
