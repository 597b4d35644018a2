"""Text classification: any ``AutoModelForSequenceClassification`` encoder and its tokenizer."""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
from datasets import Dataset
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          PreTrainedModel)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
from transformers.utils import logging as transformers_logging

from ..atomic import write_atomic
from ..data.prepare import LABEL, PreparedData
from ..errors import DataError, ModelError
from ..models.sources import MODEL_FIELD, TEACHER_FIELD, is_timm_config, resolve_model_source
from ..models.weights import check_loading_info, listing, where
from ..recipe import Recipe
from ..registry import TASKS
from .base import CardFacts, ModelInputs, TaskAdapter, label_maps, load_id, pipeline_usage

logger = logging.getLogger(__name__)

#: Keys ``from_pretrained`` puts into a tokenizer's ``init_kwargs`` (its own loading options and where the files
#: came from) that ``save_pretrained`` then writes into ``tokenizer_config.json``. They describe how this process
#: loaded the tokenizer, not the tokenizer: ``"local_files_only": true`` (set under ``HF_HUB_OFFLINE``) would make
#: a copy of the folder refuse to download anything, and a token must never be saved.
LOADING_ONLY_KEYS = ("is_local", "local_files_only", "cache_dir", "force_download", "resume_download", "proxies",
                     "token", "use_auth_token", "revision", "subfolder", "trust_remote_code", "use_fast",
                     "user_agent", "_commit_hash", "_from_auto", "_from_pipeline", "name_or_path", "device_map")
TOKENIZER_CONFIG = "tokenizer_config.json"


def strip_loading_options(directory: str | Path) -> list[str]:
    """Remove ``LOADING_ONLY_KEYS`` from ``directory/tokenizer_config.json`` (atomically); the keys removed.

    Call it right after a tokenizer's ``save_pretrained(directory)``; no file, nothing to do.
    """
    path = Path(directory) / TOKENIZER_CONFIG
    if not path.is_file():
        return []
    config = json.loads(path.read_text(encoding="utf-8"))
    removed = [key for key in LOADING_ONLY_KEYS if key in config] if isinstance(config, dict) else []
    if removed:
        kept = {key: value for key, value in config.items() if key not in removed}
        write_atomic(path, json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return removed


#: The loggers transformers 5 prints its "LOAD REPORT" table through: ``modeling_utils`` hands its own logger to
#: ``utils.loading_report.log_state_dict_report``, which logs the table as one warning.
LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")


@contextmanager
def load_report_silenced() -> Iterator[None]:
    """Raise those loggers to ERROR for the block and put their levels back after (the report's own exceptions,
    conversion errors and unignored size mismatches, still raise)."""
    loggers = [transformers_logging.get_logger(name) for name in LOAD_REPORT_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def load_with_new_head(load: Callable[[], tuple[PreTrainedModel, dict[str, Any]]], num_labels: int, field: str,
                       name: str, log: logging.Logger = logger) -> PreTrainedModel:
    """Run ``load`` (a ``from_pretrained(..., output_loading_info=True)`` of a backbone with a new classification
    head) without transformers' LOAD REPORT table, and say what was new in one INFO line instead.

    The table lists the new head as MISSING or MISMATCH, which is expected here and reads like an error. Anything
    else starting from random weights is a ``ModelError`` (``check_loading_info``), so nothing is hidden.
    """
    with load_report_silenced():
        model, info = load()
    check_loading_info(model, info, field, name)
    new = sorted({*info.get("missing_keys", ()), *(item[0] for item in info.get("mismatched_keys", ()))})
    unused = sorted(info.get("unexpected_keys", ()))
    extra = f"; {len(unused)} tensor(s) of the checkpoint not used ({listing(unused)})" if unused else ""
    if new:
        log.info("new classification head for %d labels: %s; the backbone's weights loaded from %s%s",
                 num_labels, listing(new, 4), name, extra)
    else:
        log.info("all weights loaded from %s, the classification head for %d labels included (its shape fits)%s",
                 name, num_labels, extra)
    return model


@TASKS.register("text-classification")
class TextClassification(TaskAdapter):
    name: ClassVar[str] = "text-classification"
    pipeline_tag: ClassVar[str] = "text-classification"
    input_roles: ClassVar[tuple[str, ...]] = ("text", "text_pair")
    training_defaults: ClassVar[dict[str, Any]] = {"learning_rate": 5e-5, "dataloader_num_workers": 0}
    auto_class: ClassVar[type] = AutoModelForSequenceClassification
    example_input: ClassVar[str] = '"Replace me with a sentence to classify."'
    detected_by_default: ClassVar[bool] = True

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        section = recipe.model
        source = resolve_model_source(section.name_or_path, self)
        common = {"revision": section.revision, "trust_remote_code": section.trust_remote_code}
        labels = {"num_labels": len(label_names), **label_maps(label_names)}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **common)
            if section.pretrained:
                model = load_with_new_head(lambda: AutoModelForSequenceClassification.from_pretrained(
                    source.location, ignore_mismatched_sizes=True, use_safetensors=True, output_loading_info=True,
                    **labels, **common), len(label_names), MODEL_FIELD, section.name_or_path)
            else:
                config = AutoConfig.from_pretrained(source.location, **labels, **common)
                model = AutoModelForSequenceClassification.from_config(
                    config, trust_remote_code=section.trust_remote_code)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"Could not load text model '{section.name_or_path}' ({source.kind}): {error}") from None
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ModelError(f"The tokenizer of '{section.name_or_path}' has no pad or eos token.")
            tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        tokenizer = processor
        text, pair = data.columns["text"], data.columns.get("text_pair")
        max_length = min(recipe.data.max_length, getattr(tokenizer, "model_max_length", recipe.data.max_length))

        def tokenize(batch: dict[str, list]) -> dict[str, Any]:
            for column in filter(None, (text, pair)):
                bad = [i for i, v in enumerate(batch[column]) if not isinstance(v, str)]
                if bad:
                    raise DataError(f"Column '{column}' holds a non-text value ({batch[column][bad[0]]!r}); "
                                    "fill or drop those rows.")
            encoded = tokenizer(list(batch[text]), list(batch[pair]) if pair else None,
                                truncation=True, max_length=max_length)
            return {**encoded, LABEL: batch[LABEL]}

        identity = tokenizer_fingerprint(tokenizer)

        def encode(split, name: str):
            if split is None:
                return None
            fingerprint = None if identity is None else digest(split._fingerprint, identity, text, pair, max_length)
            return split.map(tokenize, batched=True, remove_columns=split.column_names,
                             desc=f"Tokenizing {name}", new_fingerprint=fingerprint)

        collator = DataCollatorWithPadding(tokenizer)
        return ModelInputs(train=encode(data.train, "train"), validation=encode(data.validation, "validation"),
                           test=encode(data.test, "test"), collator=collator)

    def save_processor(self, processor: Any, model: PreTrainedModel, directory: Path) -> None:
        """The tokenizer, without the loading options transformers writes into ``tokenizer_config.json``."""
        processor.save_pretrained(directory)
        strip_loading_options(directory)

    def check_value(self, role: str, value: Any, where: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where} is empty or not text ({value!r}).")

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None:
        if is_timm_config(config) or config.get("model_type") not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
            kind = config.get("model_type") or config.get("architecture") or "unknown"
            raise ModelError(f"{where(field, name)} holds a '{kind}' model, which is not a text encoder "
                             "with a sequence-classification head; text-classification needs e.g. a BERT-like folder.")

    def check_teacher(self, name: str, field: str, processor: Any, revision: str | None) -> None:
        check_same_tokenizer(name, processor, revision, field)

    def preprocessing_identity(self, recipe: Recipe, model: PreTrainedModel, processor: Any) -> dict[str, Any]:
        identity = tokenizer_fingerprint(processor) if processor is not None else None
        return {"tokenizer": [type(processor).__name__, identity or getattr(processor, "name_or_path", ""),
                              len(processor) if processor is not None else 0, recipe.data.max_length]}

    def card_facts(self, recipe: Recipe) -> CardFacts:
        return CardFacts(pipeline_tag=self.pipeline_tag, tags=(self.name,),
                         input_text=f"text truncated to {recipe.data.max_length} tokens",
                         how_to_use=pipeline_usage(self.pipeline_tag, load_id(recipe), self.example_input))

    def bench_batches(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool, batch_size: int) -> list[dict[str, torch.Tensor]]:
        texts, labels = list(split[data.columns["text"]]), list(split[LABEL])
        batches = []
        for i in range(0, len(texts), batch_size):
            encoded = processor(texts[i:i + batch_size], truncation=True, max_length=recipe.data.max_length,
                                padding=True, return_tensors="pt")
            batches.append({**encoded, "labels": torch.tensor(labels[i:i + batch_size])})
        return batches

    def bench_dataset(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool) -> Dataset:
        """Tokenised once, padded to ``max_length``, as the transformers example scripts do."""
        column, max_length = data.columns["text"], recipe.data.max_length
        return split.map(lambda b: processor(list(b[column]), truncation=True, max_length=max_length,
                                             padding="max_length"), batched=True, remove_columns=[column])


def check_same_tokenizer(name: str, tokenizer: Any, revision: str | None = None, field: str = TEACHER_FIELD) -> None:
    """The teacher sees the student's token ids, so both must share one vocabulary."""
    location = resolve_model_source(name, TextClassification(), field).location
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    except (OSError, ValueError) as error:
        raise ModelError(f"{where(field, name)}: its tokenizer cannot be loaded ({error}).") from None
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ModelError(f"{where(field, name)} uses another vocabulary than the student model; "
                         "distillation feeds the teacher the student's token ids, so both need the same tokenizer.")


def digest(*parts: Any) -> str:
    """A short sha256 of JSON-serialisable parts: a ``datasets`` fingerprint for a preprocessing ``map``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A hash of everything a tokenizer's output depends on, or ``None`` without a serialisable backend.

    ``datasets`` would otherwise fingerprint each ``map`` by pickling the whole tokenizer, which was most of a
    cached linear probe's run time. The backend's truncation and padding are left out: each call sets them from
    its own arguments, which the caller hashes itself. They are cleared for the serialisation and put back,
    which costs far less than parsing and re-encoding the JSON.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        serialised = backend.to_str()
    finally:
        if truncation is not None:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)
    return digest(type(tokenizer).__name__, hashlib.sha256(serialised.encode()).hexdigest(),
                   tokenizer.truncation_side, list(tokenizer.model_input_names), tokenizer.special_tokens_map)
