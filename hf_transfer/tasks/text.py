"""Text classification: any ``AutoModelForSequenceClassification`` encoder and its tokenizer.

The token budget and cut (``data.max_length``, ``data.truncation``) are ``text_length``'s; the mean-pooled
classifier (``model.pooling``) is ``text_pooling``'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from datasets import Dataset
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, PreTrainedModel)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
from transformers.utils import logging as transformers_logging

from ..atomic import write_atomic
from ..data.prepare import LABEL, PreparedData, column_values
from ..errors import DataError, ModelError
from ..models.sources import MODEL_FIELD, TEACHER_FIELD, is_timm_config, resolve_model_source
from ..models.weights import check_loading_info, listing, where
from ..recipe import AUTO, Recipe
from ..registry import TASKS
from .base import CardFacts, ModelInputs, TaskAdapter, label_maps, load_id, pipeline_usage
from .text_length import (AUTO_PERCENTILE, CHUNK, TokenLimit, Windows, check_truncation, choose_max_length,
                          encode_texts, length_summary, model_token_limit, text_values, token_lengths)
from .text_pooling import MODEL_TYPE as POOLED_MODEL_TYPE
from .text_pooling import PooledTextConfig, PooledTextForSequenceClassification, choose_pooling

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
    row_captured_identity: ClassVar[tuple[str, ...]] = ("max_length", "truncation")  # the cache keys token ids

    def load_model(self, recipe: Recipe, label_names: list[str]) -> tuple[PreTrainedModel, Any]:
        """transformers' own sequence classifier (``pooling: cls``) or the mean-pooled one over its encoder; the
        model's token limit is recorded in ``config.tokenization`` for ``model_inputs``."""
        section = recipe.model
        source = resolve_model_source(section.name_or_path, self)
        common = {"revision": section.revision, "trust_remote_code": section.trust_remote_code}
        labels = {"num_labels": len(label_names), **label_maps(label_names)}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **common)
            config = AutoConfig.from_pretrained(source.location, **common)
            pooling = choose_pooling(section.pooling, config, source.location, section.revision)
            if section.pooling == AUTO:
                logger.info("model.pooling auto: %s (%s)", pooling, "a mean-pooled checkpoint" if pooling == "mean"
                            else "the checkpoint states no mean pooling")
            if pooling == "mean" and config.model_type != POOLED_MODEL_TYPE:
                model = self._mean_pooled(recipe, source.location, config, labels, common)
            elif section.pretrained:
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
        limit = model_token_limit(model.config, tokenizer, source.location, section.revision)
        model.config.tokenization = {**(getattr(model.config, "tokenization", None) or {}),
                                     "model_limit": limit.tokens, "model_limit_from": limit.source}
        return model, tokenizer

    def _mean_pooled(self, recipe: Recipe, location: str, config: Any, labels: dict[str, Any],
                     common: dict[str, Any]) -> PreTrainedModel:
        """The checkpoint's encoder (``AutoModel``: a classifier's own head is left out) under a new mean-pooled head."""
        section = recipe.model
        if section.pretrained:
            with load_report_silenced():
                encoder, info = AutoModel.from_pretrained(location, use_safetensors=True, output_loading_info=True,
                                                          **common)
        else:
            encoder, info = AutoModel.from_config(config, trust_remote_code=section.trust_remote_code), {}
        loaded = {f"encoder.{key}" for key in encoder.state_dict()}
        pooled = PooledTextConfig(encoder_config=encoder.config, pooling="mean", **labels)
        model = PooledTextForSequenceClassification(pooled, encoder=encoder)
        if section.pretrained:
            present = set(model.state_dict())
            missing = [f"encoder.{key}" for key in info.get("missing_keys", ()) if f"encoder.{key}" in present]
            dropped = sorted(loaded - present)
            check_loading_info(model, {"missing_keys": missing}, MODEL_FIELD, section.name_or_path)
            unused = sorted(info.get("unexpected_keys", ())) + [key.removeprefix("encoder.") for key in dropped]
            logger.info("mean-pooled classification head for %d labels over the encoder of %s%s",
                        labels["num_labels"], section.name_or_path,
                        f"; not used: {listing(unused)}" if unused else "")
        return model

    def model_inputs(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> ModelInputs:
        tokenizer = processor
        text, pair = data.columns["text"], data.columns.get("text_pair")
        truncation = recipe.data.truncation
        check_truncation(truncation, pair)
        identity = tokenizer_fingerprint(tokenizer)
        plan = self._length_plan(recipe, data, model.config, tokenizer, identity)
        max_length, windows = plan.max_length, plan.windows
        model.config.tokenization = {**(getattr(model.config, "tokenization", None) or {}),
                                     "max_length": max_length, "truncation": truncation,
                                     **(windows.to_config() if windows else {})}
        plan.log()

        def tokenize(batch: dict[str, list], indices: list[int]) -> dict[str, Any]:
            texts = text_values(batch, text)
            if windows is not None:
                encoded, owners = windows.encode(tokenizer, texts)
                return {**encoded, LABEL: [batch[LABEL][i] for i in owners], EXAMPLE: [indices[i] for i in owners]}
            pairs = text_values(batch, pair) if pair else None
            return {**encode_texts(tokenizer, texts, pairs, max_length, truncation), LABEL: batch[LABEL]}

        groups: dict[str, list[int]] = {}

        def encode(split, name: str):
            if split is None:
                return None
            cut = () if truncation == "head" else (truncation,)  # head: the fingerprints of earlier runs
            if windows is not None:
                cut += (windows.overlap, windows.max_chunks)
            fingerprint = None if identity is None else digest(split._fingerprint, identity, text, pair, max_length,
                                                                 *cut)
            encoded = split.map(tokenize, batched=True, with_indices=True, remove_columns=split.column_names,
                                desc=f"Tokenizing {name}", new_fingerprint=fingerprint)
            if windows is None or EXAMPLE not in encoded.column_names:  # an empty split maps to no columns
                return encoded
            groups[name] = column_values(encoded, EXAMPLE)
            return encoded.remove_columns(EXAMPLE)

        collator = DataCollatorWithPadding(tokenizer)
        return ModelInputs(train=encode(data.train, "train"), validation=encode(data.validation, "validation"),
                           test=encode(data.test, "test"), collator=collator, report=plan.report(),
                           groups={name: rows for name, rows in groups.items() if name != "train"})

    def _length_plan(self, recipe: Recipe, data: PreparedData, config: Any, tokenizer: Any,
                     identity: str | None, limit: TokenLimit | None = None) -> "LengthPlan":
        """Token counts of every split, and the ``max_length`` chosen from the training split's."""
        text, pair = data.columns["text"], data.columns.get("text_pair")
        recorded = getattr(config, "tokenization", None) or {}
        if limit is None:
            stated = recorded.get("model_limit")
            limit = model_token_limit(config, tokenizer) if not stated else TokenLimit(
                stated, recorded.get("model_limit_from", "the model"), model_token_limit(config, tokenizer).hard)
        lengths = {}
        for name in ("train", "validation", "test"):
            split = getattr(data, name)
            if split is not None:
                fingerprint = None if identity is None else digest(split._fingerprint, identity, text, pair, "lengths")
                lengths[name] = token_lengths(split, tokenizer, text, pair, fingerprint, name)
        max_length, why = choose_max_length(recipe.data.max_length, lengths["train"], limit, recorded.get("max_length"))
        windows = None
        if recipe.data.truncation == CHUNK:
            windows = Windows.for_tokenizer(tokenizer, max_length, recipe.data.chunk_overlap, recipe.data.max_chunks)
        return LengthPlan(max_length=max_length, why=why, limit=limit, truncation=recipe.data.truncation,
                          lengths=lengths, windows=windows)

    def input_report(self, recipe: Recipe, data: PreparedData) -> dict[str, Any]:
        """``hf-transfer check``: the tokens per text, the ``max_length`` a run would choose, how many texts it
        cuts, and the pooling, from the tokenizer and config alone (no weights are loaded)."""
        check_truncation(recipe.data.truncation, data.columns.get("text_pair"))
        if recipe.model.is_auto:
            return {}
        section = recipe.model
        source = resolve_model_source(section.name_or_path, self)
        common = {"revision": section.revision, "trust_remote_code": section.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **common)
            config = AutoConfig.from_pretrained(source.location, **common)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"Could not load the tokenizer of '{section.name_or_path}': {error}") from None
        pooling = choose_pooling(section.pooling, config, source.location, section.revision)
        limit = model_token_limit(config, tokenizer, source.location, section.revision)
        plan = self._length_plan(recipe, data, config, tokenizer, tokenizer_fingerprint(tokenizer), limit)
        return {**plan.report(), "pooling": pooling}

    def save_processor(self, processor: Any, model: PreTrainedModel, directory: Path) -> None:
        """The tokenizer, without the loading options transformers writes into ``tokenizer_config.json``."""
        processor.save_pretrained(directory)
        strip_loading_options(directory)

    def predict(self, model_dir: Path, inputs: dict[str, list], top_k: int | None = None) -> list[list[dict]]:
        """As ``pipeline`` would, but with the texts cut as in training (``config.tokenization``): the pipeline
        itself does not truncate, and cannot keep a text's tail."""
        recorded = getattr(AutoConfig.from_pretrained(model_dir), "tokenization", None) or {}
        if "max_length" not in recorded:
            return super().predict(model_dir, inputs, top_k)
        texts, pairs = inputs.get("text"), inputs.get("text_pair")
        if not texts:
            raise DataError(f"Task '{self.name}' predicts from --text; give at least one.")
        extra = [role for role, values in inputs.items() if values and role not in self.input_roles]
        if extra:
            raise DataError(f"Task '{self.name}' reads {', '.join(self.input_roles)}, not {', '.join(extra)}.")
        if pairs and len(pairs) != len(texts):
            raise DataError(f"Give one text pair per text: {len(texts)} texts, {len(pairs)} pairs.")
        truncation = recorded.get("truncation", "head")
        check_truncation(truncation, "text_pair" if pairs else None)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        names = model.config.id2label
        results = []
        for start in range(0, len(texts), PREDICT_BATCH):
            batch = texts[start:start + PREDICT_BATCH]
            for i, value in enumerate(batch):
                if not isinstance(value, str):
                    raise DataError(f"Text {start + i + 1} is not text ({value!r}).")
            chunk = pairs[start:start + PREDICT_BATCH] if pairs else None
            if truncation == CHUNK:
                encoded, owners = Windows.from_config(tokenizer, recorded).encode(tokenizer, list(batch))
            else:
                encoded, owners = encode_texts(tokenizer, list(batch), chunk, int(recorded["max_length"]),
                                               truncation), list(range(len(batch)))
            padded = tokenizer.pad(encoded, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**padded).logits.float()
            scores = mean_by_owner(logits, owners, len(batch)).softmax(dim=-1)
            for row in scores:
                best = row.argsort(descending=True)[:top_k or len(names)]
                results.append([{"label": names[int(i)], "score": float(row[i])} for i in best])
        return results

    def check_value(self, role: str, value: Any, where: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where} is empty or not text ({value!r}).")

    def check_config(self, config: dict[str, Any], name: str, field: str) -> None:
        model_type = config.get("model_type")
        if is_timm_config(config) or (model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
                                      and model_type != POOLED_MODEL_TYPE):
            kind = model_type or config.get("architecture") or "unknown"
            raise ModelError(f"{where(field, name)} holds a '{kind}' model, which is not a text encoder "
                             "with a sequence-classification head; text-classification needs e.g. a BERT-like folder.")

    def check_teacher(self, name: str, field: str, processor: Any, revision: str | None) -> None:
        check_same_tokenizer(name, processor, revision, field)

    def preprocessing_identity(self, recipe: Recipe, model: PreTrainedModel, processor: Any) -> dict[str, Any]:
        """The tokenizer, the token budget and cut (as ``model_inputs`` chose them) and the pooling."""
        identity = tokenizer_fingerprint(processor) if processor is not None else None
        tokenization = getattr(model.config, "tokenization", None) or {}
        return {"tokenizer": [type(processor).__name__, identity or getattr(processor, "name_or_path", ""),
                              len(processor) if processor is not None else 0],
                "max_length": tokenization.get("max_length", recipe.data.max_length),
                "truncation": tokenization.get("truncation", recipe.data.truncation),
                "pooling": getattr(model.config, "pooling", "cls")}

    def card_facts(self, recipe: Recipe) -> CardFacts:
        length = recipe.data.max_length
        budget = (f"the {AUTO_PERCENTILE}th percentile of the training texts' token counts, capped at the model's "
                  "limit (`data.max_length: auto`; the number is `tokenization.max_length` in config.json)"
                  if length == AUTO else f"{length} tokens")
        cut = {"head": "", "tail": ", keeping the end", "head_tail": ", keeping the start and the end"}
        if recipe.data.truncation == CHUNK:
            cut[CHUNK] = (f"; longer texts are read whole, in windows sharing {recipe.data.chunk_overlap} tokens (at "
                          f"most {recipe.data.max_chunks}), and their logits averaged")
        how_to_use = pipeline_usage(self.pipeline_tag, load_id(recipe), self.example_input)
        mean_pooled = recipe.model.pooling == "mean" or recipe.model.pooling == AUTO and self._pools_mean(recipe)
        if mean_pooled:
            how_to_use = how_to_use.replace(
                "from transformers import pipeline\n",
                "import hf_transfer  # registers the mean-pooled text classifier with transformers' Auto classes\n"
                "from transformers import pipeline\n", 1)
        how_to_use += ("\nFor texts longer than the model reads, call the pipeline with `truncation=True`; "
                       "`hf_transfer.predict(folder, texts=[...])` (or `hf-transfer predict`) cuts them exactly as "
                       "in training (`tokenization` in config.json)"
                       + (", reading every window and averaging their logits" if recipe.data.truncation == CHUNK
                          else "") + ".\n")
        return CardFacts(pipeline_tag=self.pipeline_tag, tags=(self.name,),
                         input_text=(f"text in windows of {budget}" if recipe.data.truncation == CHUNK else
                                     f"text truncated to {budget}") + cut.get(recipe.data.truncation, ""),
                         how_to_use=how_to_use)

    def _pools_mean(self, recipe: Recipe) -> bool:
        """``pooling: auto`` resolved as ``load_model`` does, from the checkpoint's files (``False`` if unreadable)."""
        try:
            source = resolve_model_source(recipe.model.name_or_path, self)
            config = AutoConfig.from_pretrained(source.location, revision=recipe.model.revision,
                                                trust_remote_code=recipe.model.trust_remote_code)
            return choose_pooling(AUTO, config, source.location, recipe.model.revision) == "mean"
        except (OSError, ValueError, KeyError, ModelError):
            return False

    def bench_batches(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool, batch_size: int) -> list[dict[str, torch.Tensor]]:
        texts, labels = list(split[data.columns["text"]]), list(split[LABEL])
        max_length = self._bench_length(recipe, data, model, processor)
        batches = []
        for i in range(0, len(texts), batch_size):
            encoded = processor(texts[i:i + batch_size], truncation=True, max_length=max_length,
                                padding=True, return_tensors="pt")
            batches.append({**encoded, "labels": torch.tensor(labels[i:i + batch_size])})
        return batches

    def bench_dataset(self, recipe: Recipe, data: PreparedData, split: Dataset, model: PreTrainedModel,
                      processor: Any, training: bool) -> Dataset:
        """Tokenised once, padded to ``max_length``, as the transformers example scripts do."""
        column, max_length = data.columns["text"], self._bench_length(recipe, data, model, processor)
        return split.map(lambda b: processor(list(b[column]), truncation=True, max_length=max_length,
                                             padding="max_length"), batched=True, remove_columns=[column])

    def _bench_length(self, recipe: Recipe, data: PreparedData, model: PreTrainedModel, processor: Any) -> int:
        recorded = (getattr(model.config, "tokenization", None) or {}).get("max_length")
        return recorded or self._length_plan(recipe, data, model.config, processor,
                                             tokenizer_fingerprint(processor)).max_length


PREDICT_BATCH = 32
EXAMPLE = "example_index"
"""``truncation: chunk``: the column, dropped after tokenizing, that says which text a window comes from."""


@dataclass(frozen=True)
class LengthPlan:
    """The token budget chosen for a run and the token counts it was chosen from, for the log and reports."""

    max_length: int
    why: str
    limit: TokenLimit
    truncation: str
    lengths: dict[str, np.ndarray]
    windows: Windows | None = None
    """``truncation: chunk``: how the texts are cut into windows."""

    def report(self) -> dict[str, Any]:
        report = {"max_length": self.max_length, "max_length_from": self.why, "model_limit": self.limit.describe(),
                  "truncation": self.truncation,
                  "tokens": {name: length_summary(values, self.max_length) for name, values in self.lengths.items()}}
        if self.windows is not None:
            report["chunks"] = {"chunk_overlap": self.windows.overlap, "max_chunks": self.windows.max_chunks,
                                **{name: self.windows.summary(values) for name, values in self.lengths.items()}}
        return report

    def log(self) -> None:
        train = length_summary(self.lengths.get("train", np.zeros(0)), self.max_length)
        if not train.get("texts"):
            logger.info("max_length %d (%s); model limit %s", self.max_length, self.why, self.limit.describe())
            return
        if self.windows is not None:
            self._log_windows(train)
            return
        logger.info("Tokens per training text: median %d, p%d %d, max %d; max_length %d (%s; model limit %s): "
                    "%d of %d texts (%.1f %%) cut (%s)", train["median"], AUTO_PERCENTILE, train[f"p{AUTO_PERCENTILE}"],
                    train["max"], self.max_length, self.why, self.limit.describe(), train["truncated"], train["texts"],
                    100 * train["truncated_share"], self.truncation)
        if train["truncated_share"] > TRUNCATED_WARNING:
            room = (f"raise data.max_length (the model reads up to {self.limit.tokens})"
                    if self.limit.tokens and self.max_length < self.limit.tokens else
                    "keep the start and end with data.truncation: head_tail")
            logger.warning("%.0f %% of the training texts are longer than max_length %d and lose their %s; %s.",
                           100 * train["truncated_share"], self.max_length,
                           "start" if self.truncation == "tail" else "end" if self.truncation == "head" else "middle",
                           room)
        for name in ("validation", "test"):
            other = length_summary(self.lengths.get(name, np.zeros(0)), self.max_length)
            share = other.get("truncated_share", 0.0)
            if share > TRUNCATED_WARNING and share > 2 * train["truncated_share"]:
                logger.warning("%.0f %% of the %s texts are longer than max_length %d (%.0f %% of the training "
                               "texts): they are longer than what the model trains on; set data.max_length to their "
                               "p%d, %d.", 100 * share, name, self.max_length, 100 * train["truncated_share"],
                               AUTO_PERCENTILE, other[f"p{AUTO_PERCENTILE}"])


    def _log_windows(self, train: dict[str, Any]) -> None:
        windows = self.windows
        logger.info("Tokens per training text: median %d, p%d %d, max %d; max_length %d (%s; model limit %s), "
                    "truncation chunk: windows sharing %d tokens, at most %d per text", train["median"],
                    AUTO_PERCENTILE, train[f"p{AUTO_PERCENTILE}"], train["max"], self.max_length, self.why,
                    self.limit.describe(), windows.overlap, windows.max_chunks)
        for name, lengths in self.lengths.items():
            if not len(lengths):
                continue
            summary = windows.summary(lengths)
            logger.info("%s: %d texts -> %d windows (%d texts span several)%s", name, len(lengths),
                        summary["windows"], summary["texts_in_several_windows"],
                        f"; {summary['texts_beyond_max_chunks']} lose their end beyond data.max_chunks "
                        f"{windows.max_chunks}" if summary["texts_beyond_max_chunks"] else "")
            if summary["beyond_max_chunks_share"] > TRUNCATED_WARNING:
                logger.warning("%.0f %% of the %s texts are longer than %d windows and lose their end; raise "
                               "data.max_chunks.", 100 * summary["beyond_max_chunks_share"], name, windows.max_chunks)


TRUNCATED_WARNING = 0.10
"""A run that cuts more than this share of its training texts says so as a warning."""


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


def mean_by_owner(logits: torch.Tensor, owners: list[int], count: int) -> torch.Tensor:
    """One row per text: the mean of its windows' logits (a text of one window keeps its own)."""
    index = torch.as_tensor(owners, dtype=torch.long)
    sums = torch.zeros(count, logits.shape[-1], dtype=logits.dtype).index_add_(0, index, logits)
    return sums / torch.bincount(index, minlength=count).clamp(min=1).unsqueeze(-1).to(logits.dtype)
