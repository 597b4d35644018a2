"""Image task: RGB conversion, timm preprocessing config, loading a timm wrapper with a new head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_transfer.data.prepare import prepare_data
from hf_transfer.errors import ModelError
from hf_transfer.recipe import Recipe
from hf_transfer.tasks.base import get_task
from hf_transfer.tasks.image import create_transforms, data_config, to_rgb


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_rgb_is_returned_unchanged():
    image = Image.new("RGB", (4, 4), (1, 2, 3))
    assert to_rgb(image) is image


def test_grayscale_l_to_rgb():
    out = to_rgb(Image.new("L", (4, 3), 77))
    assert out.mode == "RGB" and out.size == (4, 3)
    assert (pixels(out) == 77).all()


def test_palette_to_rgb_uses_palette_colours():
    image = Image.new("P", (2, 2), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    out = to_rgb(image)
    assert out.mode == "RGB"
    assert pixels(out)[0, 0].tolist() == [10, 200, 30]


def test_rgba_alpha_composited_onto_white():
    array = np.zeros((1, 2, 4), dtype=np.uint8)
    array[0, 0] = [200, 0, 0, 0]  # fully transparent -> white
    array[0, 1] = [200, 0, 0, 255]  # opaque -> itself
    out = to_rgb(Image.fromarray(array))
    assert out.mode == "RGB"
    assert pixels(out)[0, 0].tolist() == [255, 255, 255]
    assert pixels(out)[0, 1].tolist() == [200, 0, 0]


def test_la_alpha_composited_onto_white():
    array = np.array([[[50, 0], [50, 255]]], dtype=np.uint8)
    out = to_rgb(Image.fromarray(array, mode="LA"))
    assert out.mode == "RGB"
    assert pixels(out)[0, 0].tolist() == [255, 255, 255]
    assert pixels(out)[0, 1].tolist() == [50, 50, 50]


def test_16_bit_grayscale_scaled_to_8_bit():
    image = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    assert image.mode == "I;16"
    out = to_rgb(image)
    assert out.mode == "RGB"
    assert pixels(out)[..., 0].tolist() == [[0, 64], [128, 255]]
    assert (pixels(out)[..., 0] == pixels(out)[..., 2]).all()


def test_32_bit_integer_image_to_rgb():
    image = Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    assert image.mode == "I"
    assert pixels(to_rgb(image))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


@pytest.fixture
def tiny_timm_model(tiny_timm_dir):
    from transformers import TimmWrapperForImageClassification

    return TimmWrapperForImageClassification.from_pretrained(tiny_timm_dir)


def test_data_config_uses_pretrained_cfg(tiny_timm_model):
    config = data_config(tiny_timm_model)
    assert tuple(config["input_size"]) == (3, 160, 160)
    assert config["interpolation"] == "bicubic"
    assert config["crop_pct"] == pytest.approx(0.95)


def test_data_config_image_size_and_crop_override(tiny_timm_model):
    config = data_config(tiny_timm_model, image_size=64, crop_pct=1.0)
    assert tuple(config["input_size"]) == (3, 64, 64)
    assert config["crop_pct"] == 1.0
    assert tuple(tiny_timm_model.config.pretrained_cfg["input_size"]) == (3, 160, 160)  # config not mutated


def test_data_config_rejects_models_without_timm_cfg(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ModelError, match="pretrained_cfg"):
        data_config(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir))


def image_recipe(model_dir, data_path="unused", **data) -> Recipe:
    return Recipe.from_dict({"task": "image-classification", "model": {"name_or_path": str(model_dir)},
                             "data": {"path": str(data_path), **data}})


@pytest.mark.parametrize("labels", [["cat", "dog", "fox"], ["a", "b", "c", "d", "e"]])
def test_load_model_with_new_labels(tiny_timm_dir, labels):
    model, processor = get_task("image-classification").load_model(image_recipe(tiny_timm_dir), labels)
    assert processor is None
    assert model.config.label_names == labels
    assert model.config.id2label == dict(enumerate(labels))
    assert model.config.label2id == {name: i for i, name in enumerate(labels)}
    assert model.timm_model.classifier.out_features == len(labels)
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, len(labels))


def test_load_model_records_image_size_in_config(tiny_timm_dir):
    recipe = image_recipe(tiny_timm_dir, image_size=64, crop_pct=1.0)
    model, _ = get_task("image-classification").load_model(recipe, ["x", "y", "z"])
    assert list(model.config.pretrained_cfg["input_size"]) == [3, 64, 64]
    assert model.config.pretrained_cfg["crop_pct"] == 1.0
    assert list(model.timm_model.pretrained_cfg["input_size"]) == [3, 64, 64]
    assert tuple(data_config(model)["input_size"]) == (3, 64, 64)


def test_load_model_missing_folder_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        get_task("image-classification").load_model(image_recipe(tmp_path / "missing"), ["a", "b"])


def test_model_inputs_transform_images_to_model_size(tiny_timm_dir, image_folder_data):
    recipe = image_recipe(tiny_timm_dir, image_folder_data, image_size=32)
    task = get_task("image-classification")
    data = prepare_data(recipe.data, task.input_roles, seed=0)
    model, processor = task.load_model(recipe, data.label_names)
    inputs = task.model_inputs(recipe, data, model, processor)
    assert inputs.mixup is None
    batch = inputs.collator([inputs.train[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long
    evaluated = inputs.collator([inputs.test[i] for i in range(len(inputs.test))])
    assert evaluated["labels"].tolist() == list(data.test["labels"])


@pytest.mark.parametrize("re_prob", [0.0, 0.5])
def test_batched_normalisation_equals_timms_per_image_transform(tiny_timm_dir, image_folder_data, re_prob):
    """The collator normalises uint8 batches; the pixels must be exactly what timm's own transform gives."""
    recipe = image_recipe(tiny_timm_dir, image_folder_data, image_size=32).replace(
        {"data.augmentation.re_prob": re_prob})
    task = get_task("image-classification")
    data = prepare_data(recipe.data, task.input_roles, seed=0)
    model, processor = task.load_model(recipe, data.label_names)
    inputs = task.model_inputs(recipe, data, model, processor)
    examples = [inputs.test[i] for i in range(len(inputs.test))]
    assert all(e["pixel_values"].dtype == torch.uint8 for e in examples)  # normalised per batch, not per image
    _, per_image = create_transforms(data_config(model), recipe.data.augmentation)
    expected = torch.stack([per_image(to_rgb(image)) for image in data.test[data.columns["image"]]])
    pixels = inputs.collator(examples)["pixel_values"]
    assert torch.equal(pixels, expected)
    train_pixels = inputs.train[0]["pixel_values"]
    # random erasing works on normalised pixels: that train transform stays per image
    assert train_pixels.dtype == (torch.float32 if re_prob else torch.uint8)


@pytest.mark.parametrize("color_jitter", [0.0, 0.4])
def test_train_transform_jitters_colours_only_when_asked(tiny_timm_model, color_jitter):
    """timm adds ColorJitter for any number it is given; a 0 must leave the (costly, no-op) step out."""
    from hf_transfer.recipe import AugmentationSection

    train, _ = create_transforms(data_config(tiny_timm_model), AugmentationSection(color_jitter=color_jitter))
    steps = [type(step).__name__ for step in train.transforms]
    assert ("ColorJitter" in steps) == bool(color_jitter)
