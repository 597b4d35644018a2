"""Image + text classification: a timm image backbone and a transformers text encoder fused into one model.

Every fact about the two modalities comes from the unimodal adapters: each tower resolves and checks its
reference as the image or text task would (``model.image``, ``model.text``), images are preprocessed by
timm's transforms from the image tower's ``pretrained_cfg`` and texts by the text tower's tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from datasets import Dataset, Features
from datasets import Image as DatasetsImage
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, TimmWrapperModel

from ..config_utils import closest
from ..data.prepare import COLUMN_CANDIDATES, LABEL, PreparedData
from ..data.validation import image_problem
from ..errors import DataError, ModelError, RecipeError
from ..models.sources import MODEL_FIELD, ModelSource, resolve_model_source
from ..models.weights import check_loading_info, where
from ..recipe import AugmentationSection, Recipe
from ..registry import TASKS
from .base import CardFacts, ModelInputs, TaskAdapter, label_maps, load_id
from .fusion import MODEL_TYPE, TOWERS, ImageTextConfig, ImageTextFusionForClassification
from .image import (ImageBatchTransform, ImageClassification, ImageCollator, _timm_config_without_weights,
                    create_transforms, data_config, to_rgb)
from .text import (TextClassification, digest, load_report_silenced, load_with_new_head, strip_loading_options,
                   tokenizer_fingerprint)

RANDOM_PREFIX = "random:"
"""``model.image: random:<reference>``: that tower's architecture with random weights."""
TOWER_TASKS = {"image": ImageClassification, "text": TextClassification}


class ImageTextProcessor:
    """The text tower's tokenizer; the image preprocessing lives in the image tower's ``pretrained_cfg``."""

    def __init__(self, tokenizer: Any | None, towers: tuple[str, ...] | None = None) -> None:
        self.tokenizer = tokenizer
        self.towers = towers
        """The model's towers (not saved): what a distillation teacher may read (``check_teacher``)."""

    def save_pretrained(self, directory: str | Path) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)
            strip_loading_options(directory)  # as the text task does: no "local_files_only" or token in the copy

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> "ImageTextProcessor":
        has_tokenizer = (Path(directory) / "tokenizer_config.json").is_file() or not Path(directory).is_dir()
        return cls(AutoTokenizer.from_pretrained(directory, **kwargs) if has_tokenizer else None)


# ------------------------------------------------------------------------------------------ towers

def model_augmentation_off() -> AugmentationSection:
    """Prediction preprocesses like evaluation: no augmentation."""
    return AugmentationSection(random_resized_crop=False, hflip=0.0)


def tower_reference(reference: str) -> tuple[str, bool]:
    """(reference, pretrained) for ``random:<reference>`` or a plain reference."""
    if reference.startswith(RANDOM_PREFIX):
        return reference[len(RANDOM_PREFIX):], False
    return reference, True


def _loaded(load, reference: str, field: str, kind: str):
    try:
        return load()
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"Could not load the {kind} tower {where(field, reference)}: {error}") from None


def load_image_tower(reference: str, recipe: Recipe) -> PreTrainedModel:
    """A ``TimmWrapperModel`` (no classifier), its ``pretrained_cfg`` set to the recipe's image size."""
    field = "model.image"
    name, pretrained = tower_reference(reference)
    pretrained = pretrained and recipe.model.pretrained
    source = resolve_model_source(name, ImageClassification(), field)
    location = source.location
    if source.kind == "timm" and not pretrained:
        tower = TimmWrapperModel(_timm_config_without_weights(location, ["0"]))
    else:
        if source.kind == "timm":  # pretrained timm weights live on the Hub under timm/<name>.<tag>
            import timm

            location = timm.models.get_pretrained_cfg(location).hf_hub_id or f"timm/{location}"
        if pretrained:
            with load_report_silenced():  # an image classifier's own head is unused: not worth a warning table
                tower, info = _loaded(lambda: TimmWrapperModel.from_pretrained(
                    location, revision=recipe.model.revision, use_safetensors=True, output_loading_info=True),
                    reference, field, "image")
            check_loading_info(tower, info, field, reference)
        else:
            config = _loaded(lambda: AutoConfig.from_pretrained(location, revision=recipe.model.revision),
                             reference, field, "image")
            tower = TimmWrapperModel(config)
    set_image_size(tower, recipe)
    return tower


def set_image_size(tower: PreTrainedModel, recipe: Recipe) -> None:
    """``data.image_size`` and ``data.crop_pct`` into the image tower's ``pretrained_cfg``, which the run's
    preprocessing, the saved folder and ``predict`` all read."""
    config = data_config(tower, recipe.data.image_size, recipe.data.crop_pct)
    tower.config.pretrained_cfg = {**tower.config.pretrained_cfg, "input_size": list(config["input_size"]),
                                   "crop_pct": config["crop_pct"]}
    tower.timm_model.pretrained_cfg = dict(tower.config.pretrained_cfg)


def load_text_tower(reference: str, recipe: Recipe) -> tuple[PreTrainedModel, Any]:
    """The bare encoder (``AutoModel``) and its tokenizer."""
    field = "model.text"
    name, pretrained = tower_reference(reference)
    source = resolve_model_source(name, TextClassification(), field)
    common = {"revision": recipe.model.revision, "trust_remote_code": recipe.model.trust_remote_code}
    tokenizer = _loaded(lambda: AutoTokenizer.from_pretrained(source.location, **common), reference, field, "text")
    if pretrained and recipe.model.pretrained:
        with load_report_silenced():  # a sequence classifier's own head is unused: not worth a warning table
            tower, info = _loaded(lambda: AutoModel.from_pretrained(source.location, use_safetensors=True,
                                                                    output_loading_info=True, **common),
                                  reference, field, "text")
        check_loading_info(tower, info, field, reference)
    else:
        config = _loaded(lambda: AutoConfig.from_pretrained(source.location, **common), reference, field, "text")
        tower = AutoModel.from_config(config, trust_remote_code=recipe.model.trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"The tokenizer of {where(field, reference)} has no pad or eos token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tower, tokenizer


# ------------------------------------------------------------------------------------------ batches

class ImageTextBatchTransform:
    """Decodes and transforms a batch's images lazily (data-loader workers); token ids pass through."""

    def __init__(self, transform, image_column: str | None, blank: torch.Tensor, split_name: str) -> None:
        self.images = ImageBatchTransform(transform, image_column or "", split_name)
        self.image_column = image_column
        self.blank = blank

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        output = {key: value for key, value in batch.items() if key != self.image_column}
        if self.image_column is not None:
            pixels, present = [], []
            for value in batch[self.image_column]:
                missing = value is None or (isinstance(value, dict) and value.get("bytes") is None
                                            and value.get("path") is None)
                pixels.append(self.blank if missing else self.images.transform(to_rgb(self.images.decode(value))))
                present.append(0 if missing else 1)
            output["pixel_values"], output["image_present"] = pixels, present
        return output


class ImageTextCollator:
    """Pads token ids (the tokenizer's own ``pad``); images are stacked and normalised as the image task does."""

    TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, tokenizer: Any | None, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.tokenizer = tokenizer
        self.images = ImageCollator(mean, std)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {"labels": torch.tensor([e[LABEL] for e in examples], dtype=torch.long)}
        first = examples[0]
        if "pixel_values" in first:
            batch["pixel_values"] = self.images(examples)["pixel_values"]
            batch["image_present"] = torch.tensor([e["image_present"] for e in examples], dtype=torch.long)
        if "input_ids" in first:
            text = [{k: e[k] for k in self.TEXT_KEYS if k in e} for e in examples]
            batch.update(self.tokenizer.pad(text, return_tensors="pt"))
            batch["text_present"] = torch.tensor([e["text_present"] for e in examples], dtype=torch.long)
        return batch


#: ``data.max_length: auto`` for the text tower: post-length texts (captions, tweets) fit; capped at the tokenizer's limit.
AUTO_TEXT_TOKENS = 128


def _max_length(recipe: Recipe, tokenizer: Any | None) -> int:
    limit = AUTO_TEXT_TOKENS if recipe.data.max_length == "auto" else recipe.data.max_length
    return min(limit, getattr(tokenizer, "model_max_length", limit) or limit) if tokenizer is not None else limit


def _image_input(value: Any, number: int) -> Any:
    """One image given to ``predict``: ``None`` (or ``""``) when missing, else what the batch transform decodes.

    A path becomes what ``datasets`` stores for an image file and raw bytes an embedded image; both are decoded
    here once so that a bad one is named by its position, not reported as a bad row of a split.
    """
    if value is None or isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise DataError(f"Image {number} '{value}' does not exist or is not a file.")
        value = {"bytes": None, "path": str(path)}
    elif isinstance(value, (bytes, bytearray)):
        value = {"bytes": bytes(value), "path": None}
    else:
        raise DataError(f"Image {number} is a {type(value).__name__}; give a file path, a PIL image or the encoded "
                        "bytes of an image file.")
    problem = image_problem(value)
    if problem is not None:
        raise DataError(f"Image {number}: {problem}. Give a photo that opens (JPEG, PNG, WebP, ...).")
    return value


def _has_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _without_towers(recipe: Recipe, removed: list[str]) -> dict[str, Any]:
    """``Recipe.replace`` changes that drop ``removed`` towers, and their ``strategy.learning_rates`` entries: the
    one-tower model has no such part, and its strategy would refuse the rate."""
    changes: dict[str, Any] = {f"model.{name}": None for name in removed}
    rates = recipe.strategy.learning_rates
    if rates and any(name in rates for name in removed):
        changes["strategy.learning_rates"] = {part: rate for part, rate in rates.items() if part not in removed} or None
    return changes


def _check_part_rates(recipe: Recipe, towers: list[str]) -> None:
    """``strategy.learning_rates`` names parts of the fused model (its towers and ``head``): a typo stops the run
    before anything is loaded, as the strategy itself would once the model is built."""
    parts = [*towers, "head"]
    unknown = [part for part in recipe.strategy.learning_rates or {} if part not in parts]
    if unknown:
        hint = closest(unknown[0], parts)
        raise RecipeError(f"'strategy.learning_rates.{unknown[0]}' is not a part of this model"
                          + (f"; did you mean '{hint}'?" if hint else ".") + f" Parts: {', '.join(parts)}.")


# ------------------------------------------------------------------------------------------ the adapter

@TASKS.register("image-text-classification")
class ImageTextClassification(TaskAdapter):
    name: ClassVar[str] = "image-text-classification"
    pipeline_tag: ClassVar[str] = ""  # the Hub has no pipeline for image + text classification
    input_roles: ClassVar[tuple[str, ...]] = ("image", "text", "text_pair")
    training_defaults: ClassVar[dict[str, Any]] = {"learning_rate": 5e-5, "dataloader_num_workers": "auto"}
    auto_class: ClassVar[type] = AutoModel
    uses_channels_last: ClassVar[bool] = True
    train_preprocessing_differs: ClassVar[tuple[str, ...]] = ("image",)  # as image-classification's

    # ------------------------------------------------------------------ recipe and sources

    def check_recipe(self, recipe: Recipe) -> None:
        model = recipe.model
        towers = [name for name in TOWERS if getattr(model, name) is not None]
        if model.name_or_path is not None and towers:
            raise RecipeError(f"'model.name_or_path' (a trained image-text model) and 'model.{towers[0]}' are both "
                              "set: start from the trained model (name_or_path) or build one from towers "
                              "(model.image, model.text), not both.")
        if model.name_or_path is None and not towers:
            raise RecipeError("image-text-classification needs 'model.image' and 'model.text' (the two towers), or "
                              "'model.name_or_path' (a trained image-text model).")
        if model.is_auto:
            raise RecipeError("'model.name_or_path: auto' chooses one backbone; for image-text-classification rank "
                              "each tower with 'hf-transfer rank' (it scores image and text candidates) and set "
                              "model.image and model.text.")
        if recipe.data.truncation != "head":
            raise RecipeError(f"'data.truncation' = {recipe.data.truncation} is for text-classification; "
                              f"{self.name} reads the first data.max_length tokens of each text. Remove it.")
        if towers:  # a trained folder's towers are known once it is read; the strategy checks those
            _check_part_rates(recipe, towers)

    def model_references(self, recipe: Recipe) -> dict[str, str]:
        if recipe.model.name_or_path is not None:
            return {MODEL_FIELD: recipe.model.name_or_path}
        return {f"model.{name}": tower_reference(getattr(recipe.model, name))[0]
                for name in TOWERS if getattr(recipe.model, name) is not None}

    def resolve_sources(self, recipe: Recipe) -> dict[str, ModelSource]:
        if recipe.model.name_or_path is not None:
            return {MODEL_FIELD: resolve_model_source(recipe.model.name_or_path, self)}
        return {field: resolve_model_source(reference, TOWER_TASKS[field.split(".")[1]](), field)
                for field, reference in self.model_references(recipe).items()}

    def base_models(self, recipe: Recipe) -> list[str]:
        if not recipe.model.pretrained:
            return []
        return [reference for field, reference in self.model_references(recipe).items()
                if not getattr(recipe.model, field.split(".")[1], "").startswith(RANDOM_PREFIX)]

    # ------------------------------------------------------------------ model and data

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        section = recipe.model
        labels = {"num_labels": len(label_names), **label_maps(label_names)}
        if section.name_or_path is not None:
            model, processor = self._load_trained(recipe, labels)
        else:
            towers: dict[str, PreTrainedModel] = {}
            tokenizer = None
            if section.image is not None:
                towers["image"] = load_image_tower(section.image, recipe)
            if section.text is not None:
                towers["text"], tokenizer = load_text_tower(section.text, recipe)
            fusion = section.fusion
            config = ImageTextConfig(
                image_config=towers["image"].config if "image" in towers else None,
                text_config=towers["text"].config if "text" in towers else None,
                fusion=fusion.kind, hidden_size=fusion.hidden_size, fusion_dropout=fusion.dropout,
                modality_dropout=fusion.modality_dropout, text_pooling=fusion.text_pooling,
                text_max_length=_max_length(recipe, tokenizer), **labels)
            model = ImageTextFusionForClassification(config, towers=towers)
            processor = ImageTextProcessor(tokenizer)
        processor.towers = model.config.towers
        if section.channels_last and model.image_tower is not None:
            model.image_tower.to(memory_format=torch.channels_last)
        return model, processor

    def _load_trained(self, recipe: Recipe, labels: dict[str, Any]) -> tuple[PreTrainedModel, Any]:
        section = recipe.model
        source = resolve_model_source(section.name_or_path, self)
        common = {"revision": section.revision}
        try:
            if section.pretrained:
                model = load_with_new_head(lambda: ImageTextFusionForClassification.from_pretrained(
                    source.location, ignore_mismatched_sizes=True, use_safetensors=True, output_loading_info=True,
                    **labels, **common), labels["num_labels"], MODEL_FIELD, section.name_or_path)
            else:
                config = ImageTextConfig.from_pretrained(source.location, **labels, **common)
                model = ImageTextFusionForClassification(config)
            processor = ImageTextProcessor.from_pretrained(source.location, **common) \
                if model.text_tower is not None else ImageTextProcessor(None)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"Could not load image-text model '{section.name_or_path}' ({source.kind}): {error}") from None
        model.config.modality_dropout = section.fusion.modality_dropout  # a training option, not an architecture
        if model.image_tower is not None:  # the trained size unless the recipe sets another
            set_image_size(model.image_tower, recipe)
            model.config.image_config.pretrained_cfg = dict(model.image_tower.config.pretrained_cfg)
        model.config.text_max_length = _max_length(recipe, processor.tokenizer)
        return model, processor

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        towers = model.config.towers
        image_column = data.columns.get("image") if "image" in towers else None
        text, pair = data.columns.get("text"), data.columns.get("text_pair")
        tokenizer = processor.tokenizer if "text" in towers else None
        if image_column is not None:
            config = data_config(model.image_tower, None)
            train_transform, eval_transform = create_transforms(config, recipe.data.augmentation, uint8_output=True)
            size = config["input_size"]
            blank = torch.zeros((size[0], size[1], size[2]), dtype=torch.uint8)
            mean, std = config["mean"], config["std"]
        else:
            train_transform = eval_transform = blank = None
            mean, std = (0.0,), (1.0,)
        max_length = model.config.text_max_length
        identity = tokenizer_fingerprint(tokenizer) if tokenizer is not None else "no-text"

        def tokenize(batch: dict[str, list]) -> dict[str, Any]:
            present = [_has_text(v) for v in batch[text]]
            texts = [v if ok else "" for v, ok in zip(batch[text], present)]
            pairs = [v if isinstance(v, str) else "" for v in batch[pair]] if pair else None
            encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
            return {**encoded, "text_present": [int(p) for p in present]}

        def prepare(split: Dataset | None, transform, name: str):
            if split is None:
                return None
            drop = [c for c in split.column_names if c not in (image_column, LABEL)]
            if tokenizer is not None:
                fingerprint = digest(split._fingerprint, identity, text, pair, max_length, image_column)
                split = split.map(tokenize, batched=True, remove_columns=drop, desc=f"Tokenizing {name}",
                                  new_fingerprint=fingerprint)
            else:
                split = split.remove_columns(drop)
            if image_column is None:
                return split
            split = split.cast_column(image_column, DatasetsImage(decode=False))
            return split.with_transform(ImageTextBatchTransform(transform, image_column, blank, name))

        collator = ImageTextCollator(tokenizer, mean, std)
        return ModelInputs(train=prepare(data.train, train_transform, "train"),
                           validation=prepare(data.validation, eval_transform, "validation"),
                           test=prepare(data.test, eval_transform, "test"), collator=collator,
                           eval_decodes=image_column is not None)

    def save_processor(self, processor: Any, model: PreTrainedModel, directory: Path) -> None:
        processor.save_pretrained(directory)

    def check_value(self, role: str, value: Any, where: str) -> None:
        if value is None or (role != "image" and not _has_text(value)):
            return  # a missing input: data.missing_modality already decided about it
        TOWER_TASKS["image" if role == "image" else "text"]().check_value(role, value, where)

    def predict(self, model_dir: Path, inputs: dict[str, list], top_k: int | None = None,
                batch_size: int = 32) -> list[list[dict]]:
        """The saved model on raw photos (paths, PIL images, bytes) and texts; ``None`` marks a missing input."""
        towers = ImageTextConfig.from_pretrained(model_dir).towers
        given = {role: list(values) for role, values in inputs.items() if values}
        if not given:
            raise DataError("Give at least one input: --image and/or --text (Python: images=..., texts=...).")
        for role in given:
            if role.split("_")[0] not in towers:
                raise DataError(f"This model reads {' and '.join(towers)}, not {role}.")
        counts = {role: len(values) for role, values in given.items()}
        count = max(counts.values())
        if len(set(counts.values())) > 1:
            shown = " and ".join(f"{n} {role.replace('_', ' ')}(s)" for role, n in counts.items())
            raise DataError(f"Give one of each input per example: got {shown}. Where an example lacks one, pass None "
                            "(Python) or an empty value (--text '' or --image '').")
        images = [_image_input(v, i + 1) for i, v in enumerate(given.get("image") or [None] * count)]
        texts = [v if _has_text(v) else None for v in given.get("text") or [None] * count]
        pairs = given.get("text_pair")
        empty = [i + 1 for i in range(count) if ("image" not in towers or images[i] is None)
                 and ("text" not in towers or texts[i] is None)]
        if empty:
            raise DataError(f"Example {empty[0]} has no input at all (no image and no text); give at least one of the "
                            "two per example.")
        model = ImageTextFusionForClassification.from_pretrained(model_dir, use_safetensors=True).eval()
        tokenizer = ImageTextProcessor.from_pretrained(model_dir).tokenizer if "text" in towers else None
        mean, std, transform, blank = (0.0,), (1.0,), None, None
        if "image" in towers:
            config = data_config(model.image_tower, None)
            _, transform = create_transforms(config, model_augmentation_off(), uint8_output=True)
            blank = torch.zeros(tuple(config["input_size"]), dtype=torch.uint8)
            mean, std = config["mean"], config["std"]
        decode = ImageTextBatchTransform(transform, "image" if "image" in towers else None, blank, "input")
        collate = ImageTextCollator(tokenizer, mean, std)
        label_names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        results: list[list[dict]] = []
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            batch: dict[str, list] = {LABEL: [0] * (stop - start)}
            if "image" in towers:
                batch["image"] = images[start:stop]
            if "text" in towers:
                chunk = texts[start:stop]
                present = [_has_text(t) for t in chunk]
                encoded = tokenizer([t if ok else "" for t, ok in zip(chunk, present)],
                                    [p or "" for p in pairs[start:stop]] if pairs else None,
                                    truncation=True, max_length=model.config.text_max_length)
                batch.update(encoded)
                batch["text_present"] = [int(p) for p in present]
            columns = decode(batch)
            examples = [{key: values[i] for key, values in columns.items()} for i in range(stop - start)]
            with torch.inference_mode():
                probabilities = model(**{k: v for k, v in collate(examples).items() if k != "labels"}).logits.softmax(-1)
            for row in probabilities:
                order = row.argsort(descending=True)[: top_k or len(label_names)]
                results.append([{"label": label_names[i], "score": float(row[i])} for i in order.tolist()])
        return results

    # ------------------------------------------------------------------ which models fit

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None:
        if config.get("model_type") != MODEL_TYPE:
            kind = config.get("model_type") or config.get("architecture") or "unknown"
            fix = ("build one from towers with model.image and model.text instead" if field == MODEL_FIELD else
                   "give a folder written by an image-text-classification run")
            raise ModelError(f"{where(field, name)} holds a '{kind}' model, not an image-text model trained by "
                             f"hf-transfer; {fix}.")

    def check_teacher(self, name: str, field: str, processor: Any, revision: str | None) -> None:
        """The teacher is a fused folder fed the student's batches: it may read no tower the student lacks, and
        its text tower must share the student's vocabulary (the text task's check would refuse the folder)."""
        location = resolve_model_source(name, self, field).location
        try:
            config = ImageTextConfig.from_pretrained(location, revision=revision)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"Could not load the config of {where(field, name)}: {error}") from None
        student = getattr(processor, "towers", None)
        extra = [tower for tower in config.towers if student is not None and tower not in student]
        if extra:
            raise ModelError(f"{where(field, name)} reads {' and '.join(config.towers)} but the student has no "
                             f"{extra[0]} tower; a teacher sees the student's inputs, so give one whose towers the "
                             f"student also has ({', '.join(student)}).")
        tokenizer = getattr(processor, "tokenizer", None)
        if "text" in config.towers and tokenizer is not None:
            teacher = _loaded(lambda: AutoTokenizer.from_pretrained(location, revision=revision), name, field,
                              "teacher's text")
            if teacher.get_vocab() != tokenizer.get_vocab():
                raise ModelError(f"{where(field, name)} uses another vocabulary than the student model; distillation "
                                 "feeds the teacher the student's token ids, so both need the same text tower tokenizer.")

    # ------------------------------------------------------------------ feature cache

    def cache_blocker(self, recipe: Recipe) -> str | None:
        """Image augmentation changes the features; a model built without an image tower (the text-only
        ablation) sees no image, whatever ``data.augmentation`` says."""
        if recipe.model.name_or_path is None and recipe.model.image is None:
            return None
        return ImageClassification().cache_blocker(recipe)

    def preprocessing_identity(self, recipe: Recipe, model: PreTrainedModel, processor: Any) -> dict[str, Any]:
        """One entry per tower (its features are cached per tower, keyed on its own entry) and the shared ones."""
        identity: dict[str, Any] = {"missing_modality": recipe.data.missing_modality}
        if model.image_tower is not None:
            cfg = dict(model.image_tower.config.pretrained_cfg or {})
            identity["image"] = {k: cfg.get(k) for k in ("input_size", "mean", "std", "interpolation", "crop_pct",
                                                         "crop_mode")}
        if model.text_tower is not None:
            tokenizer = processor.tokenizer
            identity["text"] = {"tokenizer": [type(tokenizer).__name__, tokenizer_fingerprint(tokenizer) or
                                              getattr(tokenizer, "name_or_path", ""), len(tokenizer),
                                              model.config.text_max_length],
                                "pooling": model.config.text_pooling}
        return identity

    # ------------------------------------------------------------------ runs made of runs

    def tower_tasks(self) -> dict[str, str]:
        return {name: task.name for name, task in TOWER_TASKS.items()}

    def ablations(self, recipe: Recipe) -> dict[str, Recipe]:
        """One recipe per tower alone: same towers, fusion head, budget and strategy; the other tower removed."""
        present = [name for name in TOWERS if getattr(recipe.model, name) is not None]
        if len(present) < 2:
            raise RecipeError("'evaluation.compare_modalities' needs both towers given as model.image and model.text "
                              "(a trained image-text folder cannot be split into its towers).")
        return {f"{name}-only": recipe.replace(_without_towers(recipe, [other for other in present if other != name]))
                for name in present}

    # ------------------------------------------------------------------ reporting

    def detect(self, features: Features) -> bool:
        """An image column (as the image task detects it) and a string column named like a text column."""
        texts = [name for name in COLUMN_CANDIDATES["text"] if name in features]
        return ImageClassification().detect(features) and any(
            getattr(features[name], "dtype", None) in ("string", "large_string") for name in texts)

    def card_facts(self, recipe: Recipe) -> CardFacts:
        model_id = load_id(recipe)
        how_to_use = (
            "```python\nimport hf_transfer  # registers the image-text model with transformers' Auto classes\n"
            "from transformers import AutoModel\n\n"
            f'model = AutoModel.from_pretrained("{model_id}")\n\n'
            "# or predict straight from a photo and a text:\n"
            f'print(hf_transfer.predict("{model_id}", images=["photo.jpg"], texts=["the text that goes with it"]))\n'
            "```\n\nOn the command line: "
            f'`hf-transfer predict {model_id} --image photo.jpg --text "..."`.\n')
        size = recipe.data.image_size or "model default"
        return CardFacts(pipeline_tag=self.pipeline_tag, tags=("multimodal", "image-text-classification", "timm"),
                         input_text=(f"an image ({size} px, timm preprocessing from the image tower's `pretrained_cfg`) "
                                     f"and a text (truncated to {_max_length(recipe, None)} tokens)"),
                         how_to_use=how_to_use)
