"""image-text-classification end to end on tiny towers: strategies, fusions, missing inputs, reloading, prediction,
the modality comparison, methods and the one-line errors.

The towers (a 2-layer BERT and timm's ``test_resnet``) and the data (three classes that both the colour of the photo
and the words of the text tell apart) are built once per module; runs that several tests read are module fixtures.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hf_transfer.cli import run_cli
from test_bad_inputs import one_error

CLASSES = ("pos", "neu", "neg")
COLOURS = ((210, 40, 40), (40, 200, 40), (40, 40, 210))
WORDS = (("good", "cat"), ("ok", "photo"), ("bad", "dog"))
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "ok", "photo", "of", "a", "cat", "dog", "the"]
SIZES = {"train": 30, "validation": 9, "test": 9}


@dataclass
class Assets:
    root: Path
    image: Path
    text: Path
    data: Path
    """train 30, validation 9, test 9 rows; columns image, text, label."""
    gaps: Path
    """Like ``data`` but train row 3 has no image (None) and train row 7 an empty text."""
    text_csv: Path
    """A text-classification folder (train.csv, test.csv) with the same three labels."""


def png(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 16) -> bytes:
    from PIL import Image

    noise = rng.integers(-25, 26, size=(size, size, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def rows(count: int, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"image": [], "text": [], "label": []}
    for i in range(count):
        label = i % len(CLASSES)
        out["image"].append({"bytes": png(COLOURS[label], rng), "path": None})
        words = ["the", "photo", "of", "a", *WORDS[label]]
        rng.shuffle(words)
        out["text"].append(" ".join(words))
        out["label"].append(label)
    return out


def save_splits(folder: Path, splits: dict[str, dict[str, list]]) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

    features = Features({"image": Image(), "text": Value("string"), "label": ClassLabel(names=list(CLASSES))})
    DatasetDict({name: Dataset.from_dict(columns, features=features) for name, columns in splits.items()}
                ).save_to_disk(str(folder))
    return folder


def calibrate_batchnorm(model, rng: np.random.Generator) -> None:
    """BatchNorm statistics of images like the data's, as a pretrained backbone has: with the initial ones (mean 0,
    variance 1) a randomly initialised network's first epochs evaluate as one constant class."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None  # a cumulative average over the calibration batches
    pixels = np.stack([np.clip(np.array(COLOURS[i % 3]) + rng.integers(-25, 26, (32, 32, 3)), 0, 255)
                       for i in range(48)]).astype(np.float32)
    batch = (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255 - 0.5) / 0.5
    model.train()
    with torch.no_grad():
        for chunk in batch.split(16):
            model(pixel_values=chunk)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def build_assets(root: Path) -> Assets:
    import timm
    import torch
    from transformers import (BertConfig, BertModel, BertTokenizerFast, TimmWrapperConfig,
                              TimmWrapperForImageClassification)

    torch.manual_seed(0)
    text = root / "text"
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(VOCAB)}, model_max_length=32)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=32,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(text)
    tokenizer.save_pretrained(text)
    image = root / "image"
    cfg = timm.models.get_pretrained_cfg("test_resnet").to_dict()
    classifier = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="test_resnet", pretrained_cfg=cfg,
                                                                     num_labels=2))
    calibrate_batchnorm(classifier, rng=np.random.default_rng(9))
    classifier.save_pretrained(image)
    splits = {name: rows(count, seed) for seed, (name, count) in enumerate(SIZES.items())}
    data = save_splits(root / "data", splits)
    gaps = {name: {key: list(values) for key, values in columns.items()} for name, columns in splits.items()}
    gaps["train"]["image"][3] = None
    gaps["train"]["text"][7] = ""
    text_csv = root / "text_csv"
    text_csv.mkdir()
    for name in ("train", "test"):
        lines = ["text,label"] + [f"{t},{CLASSES[y]}" for t, y in zip(splits[name]["text"], splits[name]["label"])]
        (text_csv / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Assets(root=root, image=image, text=text, data=data, gaps=save_splits(root / "gaps", gaps),
                  text_csv=text_csv)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    return build_assets(tmp_path_factory.mktemp("image_text"))


@pytest.fixture(scope="module", autouse=True)
def feature_cache_and_one_thread(tmp_path_factory):
    """A feature cache of this module's own, so that "the first run computes" holds whatever ran before; and one
    torch thread: on a shared two-core machine a second one spins on a busy core, ~100x slower for tiny models."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TRANSFER_CACHE", str(tmp_path_factory.mktemp("image_text_cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


def recipe(assets: Assets, out: Path, **sections: Any) -> dict[str, Any]:
    """A fused recipe: both towers, 32 px, no augmentation, one epoch; ``sections`` update it section by section
    (``model={"fusion": {...}}`` merges into ``model``)."""
    base: dict[str, Any] = {
        "task": "image-text-classification",
        "model": {"image": str(assets.image), "text": str(assets.text)},
        "data": {"path": str(assets.data), "image_size": 32, "max_length": 16,
                 "augmentation": {"random_resized_crop": False, "hflip": 0}},
        "strategy": {"name": "full"},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
                     "learning_rate": 1e-3, "dataloader_num_workers": 0, "report_to": "none", "disable_tqdm": True,
                     "save_strategy": "no"},
        "output": {"dir": str(out)},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    return base


def write(recipe_dict: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe_dict), encoding="utf-8")
    return path


def train(recipe_dict: dict[str, Any], capsys=None) -> dict[str, Any]:
    """Run the recipe through the CLI; its metrics.json."""
    out = Path(recipe_dict["output"]["dir"])
    path = write(recipe_dict, out.parent / f"{out.name}.yaml")
    code = run_cli(["finetune", str(path)])
    err = capsys.readouterr().err if capsys is not None else ""
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text())


def finetune_error(recipe_dict: dict[str, Any], capsys, *words: str) -> str:
    """``hf-transfer finetune`` of a recipe that must stop with one error line, leaving no output folder."""
    out = Path(recipe_dict["output"]["dir"])
    line = one_error(capsys, run_cli(["finetune", str(write(recipe_dict, out.parent / f"{out.name}.yaml"))]), *words,
                     before_training=True)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return line


def tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def same(run: Path, source: Path, source_key: str, tower: str) -> bool:
    """Is the tower weight ``source_key`` in the run's model what the tower folder holds?"""
    import torch

    return torch.equal(tensors(run)[f"{tower}_tower.{source_key}"], tensors(source)[source_key])


IMAGE_STEM = "timm_model.conv1.0.weight"
IMAGE_TOP = "timm_model.layer4.0.conv1.weight"
TEXT_EMBEDDINGS = "embeddings.word_embeddings.weight"
TEXT_TOP = "encoder.layer.1.output.dense.weight"


def test_paths_name_the_towers_layers(assets):
    """The weights the strategy tests look at exist under these names (else they would prove nothing)."""
    assert {IMAGE_STEM, IMAGE_TOP} <= set(tensors(assets.image))
    assert {TEXT_EMBEDDINGS, TEXT_TOP} <= set(tensors(assets.text))


# ------------------------------------------------------------------------------------------ shared runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image_text_runs")


@pytest.fixture(scope="module")
def full_run(assets, runs) -> Path:
    """Both towers fine-tuned, concat fusion over mean-pooled text: the run most tests read."""
    train(recipe(assets, runs / "full", training={"learning_rate": 3e-3}))
    return runs / "full"


@pytest.fixture(scope="module")
def probe_runs(assets, runs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same linear probe twice: the first computes the towers' features, the second reads them back."""
    first = train(recipe(assets, runs / "probe1", strategy={"name": "linear_probe"}))
    second = train(recipe(assets, runs / "probe2", strategy={"name": "linear_probe"}))
    return first, second


# ------------------------------------------------------------------------------------------ strategies and fusions

def test_full_trains_both_towers_and_saves_the_fusion(full_run, assets):
    metrics = json.loads((full_run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 4 and metrics["test"]["num_samples"] == SIZES["test"]
    assert not same(full_run, assets.image, IMAGE_STEM, "image")
    assert not same(full_run, assets.text, TEXT_TOP, "text")
    config = json.loads((full_run / "config.json").read_text())
    assert config["model_type"] == "hf_transfer_image_text" and config["fusion"] == "concat"
    assert config["text_pooling"] == "mean" and config["image_config"] and config["text_config"]
    assert "auto_map" not in config  # nothing for trust_remote_code to run


def test_linear_probe_reads_cached_features_the_second_time(probe_runs, runs, assets):
    first, second = probe_runs
    assert first["feature_cache"]["adapter"] == "own-split"
    assert first["feature_cache"]["hits"] == {"train": False, "validation": False, "test": False}
    assert second["feature_cache"]["hits"] == {"train": True, "validation": True, "test": True}
    assert second["test"] == first["test"] and second["validation"] == first["validation"]
    for tower, source in (("image", assets.image), ("text", assets.text)):  # BatchNorm statistics included
        kept = [key for key in tensors(source) if not key.startswith("timm_model.fc.")]  # the classifier's own head
        assert all(same(runs / "probe2", source, key, tower) for key in kept), f"the {tower} tower changed"


@pytest.mark.parametrize("strategy, fusion, frozen, trained", [
    ({"name": "partial", "frozen_layers": 3}, {"kind": "gated", "text_pooling": "cls"},
     [("image", IMAGE_STEM), ("text", TEXT_EMBEDDINGS)], [("image", IMAGE_TOP), ("text", TEXT_TOP)]),
    ({"name": "gradual_unfreeze", "head_epochs": 0.5, "layers_per_step": 1, "epochs_per_step": 0.25},
     {"kind": "concat", "text_pooling": "cls"},
     [("image", IMAGE_STEM), ("text", TEXT_EMBEDDINGS)], [("image", IMAGE_TOP), ("text", TEXT_TOP)]),
    ({"name": "layerwise_lr", "layer_decay": 0.5}, {"kind": "gated", "text_pooling": "mean"},
     [], [("image", IMAGE_STEM), ("text", TEXT_TOP)]),
], ids=["partial-gated-cls", "gradual_unfreeze-concat-cls", "layerwise_lr-gated-mean"])
def test_strategy_and_fusion_train_end_to_end(strategy, fusion, frozen, trained, assets, runs):
    """Layers are aligned from the top of both towers: freezing the lowest three (of five) merged layers keeps the
    image stem and the text embeddings; the towers' top layers train."""
    name = strategy["name"]
    metrics = train(recipe(assets, runs / name, strategy=strategy, model={"fusion": fusion}))
    assert metrics["train"]["steps"] == 4 and "test" in metrics
    config = json.loads((runs / name / "config.json").read_text())
    assert (config["fusion"], config["text_pooling"]) == (fusion["kind"], fusion["text_pooling"])
    sources = {"image": assets.image, "text": assets.text}
    for tower, key in frozen:
        assert same(runs / name, sources[tower], key, tower), f"{tower} {key} changed"
    for tower, key in trained:
        assert not same(runs / name, sources[tower], key, tower), f"{tower} {key} did not train"


def optimizer_rates(recipe_dict: dict[str, Any], checkpoints: Path) -> dict[str, float]:
    """The learning rate of every parameter the run's TransferTrainer optimizes, by parameter name."""
    from hf_transfer.data.prepare import prepare_data
    from hf_transfer.recipe import Recipe
    from hf_transfer.tasks.base import get_task
    from hf_transfer.training.run import build_trainer

    parsed = Recipe.from_dict(recipe_dict)
    data = prepare_data(parsed.data, get_task(parsed.task).input_roles, parsed.seed)
    trainer = build_trainer(parsed, data, checkpoints).trainer
    optimizer = trainer.create_optimizer()
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: rate[id(p)] for name, p in trainer.model.named_parameters()}


def test_learning_rates_per_part_reach_the_optimizer(assets, runs):
    rates = optimizer_rates(recipe(assets, runs / "rates", strategy={
        "name": "full", "learning_rates": {"image": 1e-4, "text": 2e-4, "head": 3e-2}}), runs / "rates_ck")
    by_part: dict[str, set[float]] = {}
    for name, rate in rates.items():
        part = name.split("_tower.")[0] if "_tower." in name else "head"
        by_part.setdefault(part, set()).add(rate)
    assert by_part == {"image": {1e-4}, "text": {2e-4}, "head": {3e-2}}


def test_learning_rate_of_the_head_applies_to_cached_features(assets, runs, probe_runs):
    """A linear probe trains the head on cached features: its parameters keep their names, so the rate applies."""
    rates = optimizer_rates(recipe(assets, runs / "rates_probe", strategy={
        "name": "linear_probe", "learning_rates": {"head": 3e-2}}), runs / "rates_probe_ck")
    assert "classifier.weight" in rates and not any("_tower." in name for name in rates)
    assert set(rates.values()) == {3e-2}


def test_unknown_learning_rate_part_is_one_error_listing_the_parts(assets, runs, capsys):
    finetune_error(recipe(assets, runs / "bad_part", strategy={"name": "full", "learning_rates": {"imgae": 1e-4}}),
                   capsys, "'strategy.learning_rates.imgae'", "did you mean 'image'", "Parts: image, text, head")


# ------------------------------------------------------------------------------------------ missing inputs

def test_missing_modality_error_names_split_and_rows_before_training(assets, runs, capsys):
    line = finetune_error(recipe(assets, runs / "gaps_error", data={"path": str(assets.gaps)}), capsys,
                          "train split", "row 3 (no image)", "row 7", "'text' is empty", "missing_modality")
    assert "on_bad_example" not in line


def test_missing_modality_skip_drops_and_counts_the_rows(assets, runs):
    metrics = train(recipe(assets, runs / "gaps_skip", data={"path": str(assets.gaps), "missing_modality": "skip"}))
    assert metrics["missing_inputs"] == {"train": {"image": 1, "text": 1}}
    assert metrics["skipped"]["count"] == 2
    assert [(row["split"], row["index"]) for row in metrics["skipped"]["rows"]] == [("train", 3), ("train", 7)]


def test_missing_modality_learn_keeps_the_rows_with_modality_dropout(assets, runs):
    metrics = train(recipe(assets, runs / "gaps_learn", data={"path": str(assets.gaps), "missing_modality": "learn"},
                           model={"fusion": {"modality_dropout": 0.3}}))
    assert metrics["missing_inputs"] == {"train": {"image": 1, "text": 1}}
    assert "skipped" not in metrics and metrics["train"]["steps"] == 4  # 30 rows, batches of 8
    assert json.loads((runs / "gaps_learn" / "config.json").read_text())["modality_dropout"] == 0.3
    absent = tensors(runs / "gaps_learn")
    assert absent["absent.0"].abs().sum() > 0 and absent["absent.1"].abs().sum() > 0  # the stand-ins trained


def test_a_row_without_any_input_is_a_bad_row_not_a_missing_input():
    from datasets import ClassLabel, Dataset, Features, Image, Value

    from hf_transfer.data.validation import check_rows
    from hf_transfer.errors import DataError

    columns = rows(4, seed=5)
    columns["image"][1], columns["text"][1] = None, " "  # nothing at all
    columns["image"][2] = None  # a photo missing: the model's stand-in takes its place
    split = Dataset.from_dict(columns, features=Features({"image": Image(), "text": Value("string"),
                                                         "label": ClassLabel(names=list(CLASSES))}))
    roles = {"image": "image", "text": "text", "label": "label"}
    with pytest.raises(DataError, match=r"row 1 \(no input at all"):
        check_rows(split, "train", roles, "error", missing="keep")
    kept, bad, counts = check_rows(split, "train", roles, "skip", missing="keep")
    assert len(kept) == 3 and [row.index for row in bad] == [1] and counts == {"image": 1, "text": 0}


def test_modality_dropout_never_hides_the_only_input(full_run):
    """Training mode hides towers at random, but an example keeps what it has when all of it would be hidden."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(full_run).eval()
    model.classifier.train()  # modality dropout follows the classifier's mode; the fusion's own dropout stays off
    widths = [norm.normalized_shape[0] for norm in model.norms]
    torch.manual_seed(0)
    vectors = torch.randn(64, sum(widths))
    flags = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]).repeat(16, 1)
    blocks = []  # per tower: its vector, then its presence flag
    for i, vector in enumerate(vectors.split(widths, dim=1)):
        blocks += [vector, flags[:, i:i + 1]]
    features = torch.cat(blocks, dim=1)
    with torch.no_grad():
        model.classifier.eval()
        honoured = model.logits_from_features(features)
        model.classifier.train()
        model.config.modality_dropout = 1.0  # every tower hidden: each example keeps all it has
        assert torch.allclose(model.logits_from_features(features), honoured)
        model.config.modality_dropout = 0.5
        dropped = model.logits_from_features(features)
    one_input = flags.sum(dim=1) == 1
    assert torch.allclose(dropped[one_input], honoured[one_input])
    assert not torch.allclose(dropped[~one_input], honoured[~one_input])


def test_gradient_checkpointing_reaches_both_towers(full_run):
    """``training.gradient_checkpointing: true`` asks the fused model; each tower checkpoints its own blocks."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(full_run).train()
    model.activation_checkpointing_enable()
    assert model.image_tower.timm_model.grad_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.text_tower.encoder.layer)
    ids = torch.tensor([[2, 5, 11, 3], [2, 6, 12, 3]])
    output = model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=ids, attention_mask=torch.ones_like(ids),
                   labels=torch.tensor([0, 2]))
    output.loss.backward()
    assert model.text_tower.encoder.layer[0].attention.self.query.weight.grad is not None
    model.activation_checkpointing_disable()
    assert not model.image_tower.timm_model.grad_checkpointing


# ------------------------------------------------------------------------------------------ reload and predict

def test_saved_folder_loads_with_auto_model_without_remote_code(full_run):
    """In a fresh interpreter: ``import hf_transfer`` is all it takes (no trust_remote_code, no auto_map)."""
    import os
    import subprocess
    import sys

    script = ("import hf_transfer, transformers, sys; m = transformers.AutoModel.from_pretrained(sys.argv[1], "
              "trust_remote_code=False); print(type(m).__module__, type(m).__name__, m.config.id2label[2])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script, str(full_run)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hf_transfer.tasks.fusion", "ImageTextFusionForClassification", "neg"]


def split_inputs(assets, name: str = "test") -> tuple[list[bytes], list[str], list[int]]:
    from datasets import Image, load_from_disk

    split = load_from_disk(str(assets.data))[name].cast_column("image", Image(decode=False))
    return [value["bytes"] for value in split["image"]], list(split["text"]), list(split["label"])


def confusion(predicted: list[str], labels: list[int]) -> list[list[int]]:
    matrix = [[0] * len(CLASSES) for _ in CLASSES]
    for label, name in zip(labels, predicted):
        matrix[label][CLASSES.index(name)] += 1
    return matrix


def test_predict_reproduces_the_test_metrics(full_run, assets):
    import hf_transfer

    images, texts, labels = split_inputs(assets)
    results = hf_transfer.predict(full_run, images=images, texts=texts)
    metrics = json.loads((full_run / "metrics.json").read_text())["test"]
    predicted = [result[0]["label"] for result in results]
    assert confusion(predicted, labels) == metrics["confusion_matrix"]
    assert sum(CLASSES[y] == p for y, p in zip(labels, predicted)) / len(labels) == metrics["accuracy"]
    score = [{entry["label"]: entry["score"] for entry in result} for result in results]
    loss = -np.mean([np.log(s[CLASSES[y]]) for s, y in zip(score, labels)])  # the same probabilities, not only labels
    assert loss == pytest.approx(metrics["loss"], rel=1e-4)
    assert all(abs(sum(entry["score"] for entry in result) - 1) < 1e-5 and len(result) == 3 for result in results)
    assert [len(r) for r in hf_transfer.predict(full_run, images=images[:2], texts=[None, ""], top_k=1)] == [1, 1]


def test_predict_names_a_bad_image_by_its_position(full_run, assets):
    import hf_transfer
    from hf_transfer.errors import DataError

    images, texts, _ = split_inputs(assets)
    with pytest.raises(DataError, match="Image 2: embedded image: not a readable image"):
        hf_transfer.predict(full_run, images=[images[0], b"not a picture"], texts=texts[:2])
    with pytest.raises(DataError, match=r"got 1 image\(s\) and 2 text\(s\)"):
        hf_transfer.predict(full_run, images=images[:1], texts=texts[:2])


def test_cli_predict_reproduces_the_test_metrics(full_run, assets, tmp_path, capsys):
    images, texts, labels = split_inputs(assets)
    arguments = ["predict", str(full_run)]
    for i, (image, text) in enumerate(zip(images, texts)):
        (tmp_path / f"{i}.png").write_bytes(image)
        arguments += ["--image", str(tmp_path / f"{i}.png"), "--text", text]
    capsys.readouterr()
    assert run_cli(arguments) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    metrics = json.loads((full_run / "metrics.json").read_text())["test"]
    assert confusion([line[0]["label"] for line in lines], labels) == metrics["confusion_matrix"]


@pytest.mark.parametrize("arguments, words", [
    (["--image", "{tmp}/no_such.png", "--text", "good cat"], ("Image 1", "no_such.png", "does not exist")),
    (["--image", "{tmp}/notes.png", "--text", "good cat"], ("Image 1", "notes.png", "not a readable image")),
    (["--image", "{tmp}/a.png", "--image", "{tmp}/a.png", "--text", "good cat"],
     ("one of each input per example", "2 image(s) and 1 text(s)")),
    (["--image", "", "--text", ""], ("Example 1", "no input")),
], ids=["missing-file", "not-an-image", "two-images-one-text", "nothing"])
def test_cli_predict_bad_inputs_are_one_error(arguments, words, full_run, assets, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "a.png").write_bytes(split_inputs(assets)[0][0])
    code = run_cli(["predict", str(full_run), *[a.replace("{tmp}", str(tmp_path)) for a in arguments]])
    one_error(capsys, code, *words)


def test_a_run_starts_from_a_trained_fused_folder(full_run, assets, runs):
    metrics = train(recipe(assets, runs / "continued", model={"name_or_path": str(full_run), "image": None,
                                                              "text": None}, data={"image_size": 24}))
    assert metrics["train"]["steps"] == 4 and "test" in metrics
    assert set(tensors(runs / "continued")) == set(tensors(full_run))
    config = json.loads((runs / "continued" / "config.json").read_text())
    assert config["image_config"]["pretrained_cfg"]["input_size"] == [3, 24, 24]  # the recipe's size, not the folder's
    assert json.loads((full_run / "config.json").read_text())["image_config"]["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_evaluate_a_fused_folder_matches_the_run(full_run, assets, capsys):
    capsys.readouterr()
    assert run_cli(["evaluate", str(full_run), "--data", str(assets.data)]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = json.loads((full_run / "metrics.json").read_text())["test"]
    assert report["confusion_matrix"] == metrics["confusion_matrix"] and report["accuracy"] == metrics["accuracy"]
    assert report["loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def test_check_reports_both_towers_and_missing_inputs(assets, runs, capsys):
    path = write(recipe(assets, runs / "checked", data={"path": str(assets.gaps), "missing_modality": "learn"}),
                 runs / "checked.yaml")
    capsys.readouterr()
    assert run_cli(["check", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("\nOK:")])
    assert set(report["model"]) == {"model.image", "model.text"}
    assert report["model"]["model.image"]["architecture"] == "test_resnet"
    assert report["missing_inputs"] == {"train": {"image": 1, "text": 1}}
    assert "OK:" in out and not (runs / "checked").exists()


# ------------------------------------------------------------------------------------------ compare_modalities

def test_compare_modalities_trains_each_tower_alone(assets, runs):
    rates = {"image": 1e-3, "text": 1e-3, "head": 1e-2}  # each one-tower run keeps the rates of its parts
    metrics = train(recipe(assets, runs / "compared", strategy={"name": "linear_probe", "learning_rates": rates},
                           evaluation={"compare_modalities": True}))
    table = metrics["compare_modalities"]
    assert table["split"] == "test" and set(table["runs"]) == {"image-only", "text-only", "fused"}
    assert table["runs"]["fused"]["accuracy"] == metrics["test"]["accuracy"]
    best = max(table["runs"][name]["accuracy"] for name in ("image-only", "text-only"))
    assert table["fusion_gain"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"] - best, abs=1e-6)
    for name, tower in (("image-only", "image"), ("text-only", "text")):
        folder = runs / "compared" / "modalities" / name
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "hf_transfer_image_text"
        assert [t for t in ("image", "text") if config[f"{t}_config"]] == [tower]
        sub = json.loads((folder / "metrics.json").read_text())
        assert sub["test"]["accuracy"] == table["runs"][name]["accuracy"]
    assert (runs / "compared" / "modalities" / "text-only" / "tokenizer.json").is_file()
    assert not (runs / "compared" / "modalities" / "image-only" / "tokenizer.json").exists()
    # features are cached per tower: the fused run reads what the one-tower runs computed for the same towers
    assert metrics["feature_cache"]["hits"] == {"train": True, "validation": True, "test": True}
    again = train(recipe(assets, runs / "compared", strategy={"name": "linear_probe", "learning_rates": rates},
                         evaluation={"compare_modalities": True}, output={"overwrite": True}))
    assert again["compare_modalities"] == table  # a finished comparison is replaced by its successor



def test_an_interrupted_comparison_resumes_with_its_finished_one_tower_runs(assets, runs, monkeypatch):
    """Killed after the one-tower runs finished: the same command again reuses them and trains only the fused run."""
    import hf_transfer.runs.modalities as modalities

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash("killed before the fused run")

    fused = recipe(assets, runs / "resumed", strategy={"name": "linear_probe"}, evaluation={"compare_modalities": True})
    monkeypatch.setattr(modalities, "run_compared", crash)
    with pytest.raises(Crash):
        run_cli(["finetune", str(write(fused, runs / "resumed.yaml"))])
    monkeypatch.undo()
    alone = runs / "resumed" / "modalities" / "image-only" / "metrics.json"
    before = alone.stat().st_mtime_ns
    metrics = train(fused)
    assert alone.stat().st_mtime_ns == before  # reused, not trained again
    assert set(metrics["compare_modalities"]["runs"]) == {"image-only", "text-only", "fused"}

def test_a_one_tower_model_reuses_the_fused_models_tower_features(assets, runs):
    """Keys are per tower (its weights, its preprocessing, the rows): the text-only model after a fused probe."""
    fused = train(recipe(assets, runs / "share-fused", strategy={"name": "linear_probe"},
                         data={"max_length": 24}))  # a preprocessing no other test uses: nothing cached yet
    alone = train(recipe(assets, runs / "share-text", strategy={"name": "linear_probe"}, data={"max_length": 24},
                         model={"image": None}))
    assert fused["feature_cache"]["hits"] == {"train": False, "validation": False, "test": False}
    assert alone["feature_cache"]["hits"] == {"train": True, "validation": True, "test": True}


# ------------------------------------------------------------------------------------------ methods

def logged(run: Path, key: str) -> list[float]:
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry[key] for entry in history if key in entry]


def test_l2sp_trains_the_fused_model(assets, runs):
    metrics = train(recipe(assets, runs / "l2sp", method={"name": "l2sp", "alpha": 0.1},
                           training={"logging_steps": 1}))
    assert "test" in metrics and logged(runs / "l2sp", "loss_l2sp")
    assert any(value > 0 for value in logged(runs / "l2sp", "loss_l2sp"))


def test_distillation_from_a_fused_teacher(full_run, assets, runs):
    metrics = train(recipe(assets, runs / "distilled", method={"name": "distillation", "teacher": str(full_run)},
                           training={"logging_steps": 1}))
    assert "test" in metrics and logged(runs / "distilled", "loss_kd")


def test_dann_aligns_the_fused_features(assets, runs, full_run):
    """The domain classifier reads the input of the final classifier: for the fused model, the fused vector."""
    import transformers

    from hf_transfer.methods.base import classifier_layer
    from hf_transfer.models.layout import discover_layout

    fused = transformers.AutoModel.from_pretrained(full_run)
    assert classifier_layer(fused, discover_layout(fused)) is fused.classifier
    metrics = train(recipe(assets, runs / "dann", method={"name": "dann", "target": {"path": str(assets.gaps), "missing_modality": "learn"}},
                           training={"logging_steps": 1}))
    assert "target_validation" in metrics and "target_test" in metrics
    assert logged(runs / "dann", "loss_adv")


# ------------------------------------------------------------------------------------------ one-line errors

def text_recipe(assets: Assets, out: Path, **extra: Any) -> dict[str, Any]:
    return {"task": "text-classification", "model": {"name_or_path": str(assets.text)},
            "data": {"path": str(assets.text_csv), **extra.pop("data", {})}, "output": {"dir": str(out)}, **extra}


BAD_RECIPES = {
    "name_or_path-and-towers": (lambda a, out: recipe(a, out, model={"name_or_path": str(a.image)}),
                                ("'model.name_or_path'", "'model.image'", "both set")),
    "tower-on-image-task": (lambda a, out: {**recipe(a, out), "task": "image-classification",
                                            "model": {"name_or_path": str(a.image), "image": str(a.image)}},
                            ("'model.image'", "image-classification", "model.name_or_path")),
    "compare-modalities-on-text": (lambda a, out: text_recipe(a, out, evaluation={"compare_modalities": True}),
                                   ("'evaluation.compare_modalities'", "text-classification")),
    "missing-modality-on-text": (lambda a, out: text_recipe(a, out, data={"missing_modality": "learn"}),
                                 ("'data.missing_modality'", "text-classification")),
    "text-truncation-on-image-text": (lambda a, out: recipe(a, out, data={"truncation": "chunk"}),
                                      ("'data.truncation' = chunk", "text-classification", "max_length")),
    "text-folder-as-image": (lambda a, out: recipe(a, out, model={"image": str(a.text)}),
                             ("'model.image'", "'bert'", "not a timm image backbone")),
    "image-folder-as-text": (lambda a, out: recipe(a, out, model={"text": str(a.image)}),
                             ("'model.text'", "timm_wrapper", "not a text encoder")),
    "unknown-fusion": (lambda a, out: recipe(a, out, model={"fusion": {"kind": "concta"}}),
                       ("'model.fusion.kind'", "'concta'", "concat, gated")),
    "text-model-as-teacher": (
        lambda a, out: recipe(a, out, method={"name": "distillation", "teacher": str(a.text)}),
        ("'method.teacher'", "'bert' model", "image-text-classification run")),
    "unknown-learning-rate-part": (
        lambda a, out: recipe(a, out, strategy={"name": "full", "learning_rates": {"backbone": 1e-4}}),
        ("'strategy.learning_rates.backbone'", "Parts: image, text, head")),
    "compare-modalities-of-a-trained-folder": (
        lambda a, out: recipe(a, out, model={"name_or_path": str(out.parent / "full"), "image": None, "text": None},
                              evaluation={"compare_modalities": True}),
        ("'evaluation.compare_modalities'", "model.image and model.text")),
    "teacher-with-a-tower-the-student-lacks": (
        lambda a, out: recipe(a, out, model={"text": None}, method={"name": "distillation",
                                                                     "teacher": str(out.parent / "full")}),
        ("'method.teacher'", "no text tower")),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_recipe_is_one_line_and_exit_code_2(case, assets, runs, full_run, capsys):
    build, words = BAD_RECIPES[case]
    finetune_error(build(assets, runs / f"bad_{case}"), capsys, *words)
