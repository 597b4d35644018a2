"""Image classification: timm backbones wrapped as ``TimmWrapperForImageClassification``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from datasets import Dataset, Features
from datasets import Image as DatasetsImage
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel, TimmWrapperConfig

from ..data.prepare import COLUMN_CANDIDATES, LABEL, PreparedData
from ..data.validation import image_problem
from ..errors import DataError, ModelError
from ..models.sources import MODEL_FIELD, ModelSource, is_timm_config, resolve_model_source
from ..models.weights import where
from ..recipe import AugmentationSection, Recipe
from ..registry import TASKS
from .base import CardFacts, ModelInputs, TaskAdapter, label_maps, load_id, pipeline_usage
from .text import load_with_new_head

logger = logging.getLogger(__name__)


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA/LA and 16-bit images all become 8-bit RGB (alpha on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).round().astype("uint8"), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    return image.convert("RGB")


def _timm_config_without_weights(architecture: str, label_names: list[str]) -> TimmWrapperConfig:
    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(architecture)
    cfg = pretrained_cfg.to_dict() if pretrained_cfg is not None else {}
    return TimmWrapperConfig(architecture=architecture, pretrained_cfg=cfg, num_labels=len(label_names),
                             label_names=list(label_names), **label_maps(label_names))


def _load(source: ModelSource, recipe: Recipe, label_names: list[str]) -> PreTrainedModel:
    model_section = recipe.model
    common = {"trust_remote_code": model_section.trust_remote_code}
    if source.kind == "timm" and not model_section.pretrained:
        return AutoModelForImageClassification.from_config(_timm_config_without_weights(source.location, label_names))
    location = source.location
    if source.kind == "timm":  # pretrained timm weights live on the Hub under timm/<name>.<tag>
        import timm

        location = timm.models.get_pretrained_cfg(location).hf_hub_id or f"timm/{location}"
    if not model_section.pretrained:
        config = AutoConfig.from_pretrained(location, revision=model_section.revision,
                                            num_labels=len(label_names), **label_maps(label_names), **common)
        return AutoModelForImageClassification.from_config(config, **common)
    return load_with_new_head(lambda: AutoModelForImageClassification.from_pretrained(
        location, revision=model_section.revision, num_labels=len(label_names), output_loading_info=True,
        ignore_mismatched_sizes=True, use_safetensors=True, **label_maps(label_names), **common),
        len(label_names), MODEL_FIELD, model_section.name_or_path, log=logger)


def data_config(model: PreTrainedModel, image_size: int | None = None, crop_pct: float | None = None) -> dict[str, Any]:
    """timm's preprocessing for this model (input size, mean/std, interpolation, crop)."""
    from timm.data import resolve_data_config

    pretrained_cfg = dict(getattr(model.config, "pretrained_cfg", None) or {})
    if not pretrained_cfg:
        raise ModelError(f"{type(model).__name__} carries no timm pretrained_cfg; only timm image backbones "
                         "(TimmWrapperForImageClassification) are supported for image tasks.")
    if image_size is not None:
        pretrained_cfg["input_size"] = [3, image_size, image_size]
        pretrained_cfg.pop("test_input_size", None)
    if crop_pct is not None:
        pretrained_cfg["crop_pct"] = crop_pct
    return resolve_data_config(pretrained_cfg=pretrained_cfg, verbose=False)


def create_transforms(config: dict[str, Any], augmentation: AugmentationSection, uint8_output: bool = False):
    """timm's train and eval transforms for ``config``.

    ``uint8_output``: end with uint8 tensors and leave ``ToTensor``/``Normalize`` to ``ImageCollator``, which
    does them once per batch (timm's "prefetcher" split). Per image they cost more than decoding and resizing
    a small image together. Random erasing works on normalised pixels, so a train transform that erases keeps
    the per-image path.
    """
    from timm.data import create_transform

    crop = {} if augmentation.random_resized_crop else {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    train = create_transform(
        **config, is_training=True, hflip=augmentation.hflip, vflip=augmentation.vflip,
        # 0 means no jitter: timm would still add ColorJitter(0, 0, 0), a no-op that costs time per image
        auto_augment=augmentation.auto_augment, color_jitter=augmentation.color_jitter or None,
        re_prob=augmentation.re_prob, use_prefetcher=uint8_output and not augmentation.re_prob,
        **({"scale": tuple(augmentation.scale)} | crop))
    return train, create_transform(**config, is_training=False, use_prefetcher=uint8_output)


class ImageBatchTransform:
    """Decodes and transforms images lazily, inside data-loader workers (``Dataset.set_transform``).

    The splits hold undecoded images (``Image(decode=False)``) so that a bad file found here, after the
    pre-flight sample, is named in the error rather than failing inside ``datasets``.
    """

    def __init__(self, transform, image_column: str, split_name: str = "data") -> None:
        self.transform = transform
        self.image_column = image_column
        self.split_name = split_name

    def decode(self, value: Any) -> Image.Image:
        """A PIL image, a ``{bytes, path}`` struct (bytes first, else the file) or raw encoded bytes."""
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, (bytes, bytearray)):
            value = {"bytes": bytes(value), "path": None}
        try:
            return DatasetsImage().decode_example(value)
        except Exception:
            problem = image_problem(value) or "not a readable image"
            raise DataError(f"The {self.split_name} split holds a bad image: {problem}. Fix or remove the file, "
                            "or set data.on_bad_example=skip to check every image before training.") from None

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixels = [self.transform(to_rgb(self.decode(image))) for image in batch[self.image_column]]
        return {"pixel_values": pixels, LABEL: batch[LABEL]}


def collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack already normalised float images (no normalisation here)."""
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e[LABEL] for e in examples], dtype=torch.long)}


class ImageCollator:
    """Stacks a batch and normalises uint8 images in one tensor operation per step.

    The arithmetic is torchvision's ``ToTensor`` + ``Normalize`` (divide by 255, subtract the mean, divide by
    the std), so the pixels equal the per-image transform's bit for bit. Float images (a train transform
    with random erasing) arrive normalised and are only stacked.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate_images(examples)
        pixels = batch["pixel_values"]
        if pixels.dtype == torch.uint8:
            # stays NCHW: a channels_last model converts it in its first convolution, and handing it
            # channels_last input measured slower in evaluation (docs/performance.md)
            pixels = pixels.float().div_(255).sub_(self.mean).div_(self.std)
        batch["pixel_values"] = pixels
        return batch


def _strip_wrapper_prefix(weights: Path, prefix: str = "timm_model.") -> None:
    """Save timm's own key names, as timm's ``save_for_hf`` does, so ``timm.create_model`` reads the file too.

    ``TimmWrapper`` adds the prefix back when loading, so transformers and pipelines are unaffected.
    """
    from safetensors.torch import load_file, save_file

    if not weights.is_file():
        return
    state = load_file(weights)
    if any(key.startswith(prefix) for key in state):
        save_file({key.removeprefix(prefix): tensor for key, tensor in state.items()}, weights,
                  metadata={"format": "pt"})


class MixedPixels:
    """timm ``Mixup``/``CutMix`` on a batch of images: (model inputs, soft targets) for the training loss."""

    def __init__(self, mixup) -> None:
        self.mixup = mixup

    def __call__(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pixels, targets = self.mixup(inputs["pixel_values"], inputs["labels"])
        return {"pixel_values": pixels}, targets


@TASKS.register("image-classification")
class ImageClassification(TaskAdapter):
    name: ClassVar[str] = "image-classification"
    pipeline_tag: ClassVar[str] = "image-classification"
    input_roles: ClassVar[tuple[str, ...]] = ("image",)
    training_defaults: ClassVar[dict[str, Any]] = {"learning_rate": 5e-4, "dataloader_num_workers": "auto"}
    auto_class: ClassVar[type] = AutoModelForImageClassification
    example_input: ClassVar[str] = '"path/or/url/to/image.jpg"'
    uses_channels_last: ClassVar[bool] = True
    train_preprocessing_differs: ClassVar[tuple[str, ...]] = ("image",)  # train: whole image resized; eval: crop_pct

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        source = resolve_model_source(recipe.model.name_or_path, self)
        try:
            model = _load(source, recipe, label_names)
        except (OSError, ValueError) as error:
            raise ModelError(f"Could not load image model '{recipe.model.name_or_path}' ({source.kind}): {error}") from None
        if getattr(model.config, "pretrained_cfg", None) is not None:
            # transformers keeps the source's label_names (e.g. 1000 ImageNet classes); the head is new.
            model.config.label_names = list(label_names)
            config = data_config(model, recipe.data.image_size, recipe.data.crop_pct)
            model.config.pretrained_cfg = {**model.config.pretrained_cfg, "input_size": list(config["input_size"]),
                                           "crop_pct": config["crop_pct"]}
            if hasattr(model, "timm_model"):
                model.timm_model.pretrained_cfg = dict(model.config.pretrained_cfg)
        if recipe.model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, None

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        augmentation = recipe.data.augmentation
        config = data_config(model, None)
        train_transform, eval_transform = create_transforms(config, augmentation, uint8_output=True)
        column = data.columns["image"]

        def lazy(split, transform, name: str):
            if split is None:
                return None
            undecoded = split.cast_column(column, DatasetsImage(decode=False))
            return undecoded.with_transform(ImageBatchTransform(transform, column, name))

        train = lazy(data.train, train_transform, "train")
        validation = lazy(data.validation, eval_transform, "validation")
        test = lazy(data.test, eval_transform, "test")
        mixup = None
        if augmentation.mixes:
            from timm.data import Mixup

            mixup = MixedPixels(Mixup(mixup_alpha=augmentation.mixup_alpha, cutmix_alpha=augmentation.cutmix_alpha,
                                      label_smoothing=0.0, num_classes=len(data.label_names)))
        collator = ImageCollator(config["mean"], config["std"])
        return ModelInputs(train=train, validation=validation, test=test, collator=collator, mixup=mixup,
                           eval_decodes=True)

    def check_value(self, role: str, value: Any, where: str) -> None:
        to_rgb(value)  # decodes it as training will; a bad file raises DataError naming itself

    def save_processor(self, processor: Any, model: PreTrainedModel, directory: Path) -> None:
        """timm models keep preprocessing in ``config.json``; add ``id2label``/``label2id`` there too."""
        _strip_wrapper_prefix(Path(directory) / "model.safetensors")
        path = Path(directory) / "config.json"
        config = json.loads(path.read_text())
        if "label_names" in config:
            config["id2label"] = {str(i): n for i, n in enumerate(config["label_names"])}
            config["label2id"] = {n: i for i, n in enumerate(config["label_names"])}
            # timm reads model_args as a dict (null breaks timm.create_model); transformers passes num_classes.
            model_args = config.pop("model_args", None) or {}
            model_args.pop("num_classes", None)
            if model_args:
                config["model_args"] = model_args
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None:
        if not is_timm_config(config):
            kind = config.get("model_type") or config.get("architecture") or "unknown"
            raise ModelError(f"{where(field, name)} holds a '{kind}' model, not a timm image backbone; "
                             "image-classification needs a timm model (a timm architecture name, a timm Hub id, or a "
                             "folder saved from TimmWrapperForImageClassification).")

    def bare_name_source(self, name: str, field: str) -> ModelSource | None:
        """A name without ``/`` is a timm architecture (``resnet18``, ``resnet18.a1_in1k``), never a Hub id."""
        if "/" in name:
            return None
        import timm

        if timm.is_model(name) or timm.is_model(name.split(".")[0]):
            return ModelSource("timm", name)
        raise ModelError(f"{where(field, name)} is neither a local folder, a timm architecture nor a "
                         "Hub id (user/name). See timm.list_models() for architectures.")

    def cache_blocker(self, recipe: Recipe) -> str | None:
        if recipe.data.augmentation.changes_input:
            return ("data.augmentation changes the input every epoch (random_resized_crop, flips, auto_augment, "
                    "color_jitter, re_prob or mixup); turn them off to train the head from cached features")
        return None

    def preprocessing_identity(self, recipe: Recipe, model: PreTrainedModel, processor: Any) -> dict[str, Any]:
        cfg = dict(getattr(model.config, "pretrained_cfg", None) or {})
        return {"image": {k: cfg.get(k) for k in ("input_size", "mean", "std", "interpolation", "crop_pct",
                                                  "crop_mode")}}

    def detect(self, features: Features) -> bool:
        """An image-typed column, or a column named like one (``image``, ``img``, ...)."""
        return any(isinstance(f, DatasetsImage) for f in features.values()) or any(
            name in features for name in COLUMN_CANDIDATES["image"])

    def card_facts(self, recipe: Recipe) -> CardFacts:
        timm_id = (f"hf-hub:{recipe.output.hub_model_id}" if recipe.output.hub_model_id
                   else "local-dir:path/to/this/folder")
        return CardFacts(
            pipeline_tag=self.pipeline_tag, library_name="timm", tags=("timm", self.name),
            input_text=(f"images at {recipe.data.image_size or 'model default'} px, preprocessing from the timm "
                        "`pretrained_cfg` in `config.json`"),
            how_to_use=pipeline_usage(self.pipeline_tag, load_id(recipe), self.example_input)
            + f'\nThe weights also load in timm: `timm.create_model("{timm_id}", pretrained=True)`.\n')

    def bench_batches(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool, batch_size: int) -> list[dict[str, torch.Tensor]]:
        train_tf, eval_tf = create_transforms(data_config(model), recipe.data.augmentation)
        transform = train_tf if training else eval_tf
        pixels = torch.stack([transform(to_rgb(image)) for image in split[data.columns["image"]]])
        labels = torch.tensor(list(split[LABEL]))
        return [{"pixel_values": pixels[i:i + batch_size], "labels": labels[i:i + batch_size]}
                for i in range(0, len(labels), batch_size)]

    def bench_dataset(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool) -> Dataset:
        """Decode and transform per batch in the main process."""
        train_tf, eval_tf = create_transforms(data_config(model), recipe.data.augmentation)
        transform, column = (train_tf if training else eval_tf), data.columns["image"]

        def apply(batch):
            return {"pixel_values": [transform(to_rgb(i)) for i in batch[column]], "labels": batch[LABEL]}

        return split.with_transform(apply)
