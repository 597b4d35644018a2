"""How many tokens a text classifier reads, and which ones (``data.max_length``, ``data.truncation``).

A fixed ``max_length`` silently cuts long documents: 64 tokens keep 2 % of a review corpus whole. ``auto`` takes
the 95th percentile of the training texts' token counts instead, capped at what the checkpoint says it reads
(``TokenLimit``), and every run reports the length distribution and the share of texts it cuts.

A text longer than the budget keeps its ``head`` (the tokenizer's own truncation), its ``tail``, or both ends
(``head_tail``: Sun et al. 2019, "How to Fine-Tune BERT for Text Classification", arXiv:1905.05583, kept the
first 128 and last 382 of 512 tokens, best on IMDb). The latter two tokenize the whole text and cut its content
tokens, keeping the special tokens around them. ``chunk`` cuts nothing: a longer text becomes overlapping windows
(the fast tokenizer's own overflow with a stride), each a training row with the text's label; evaluation and
prediction average a text's window logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from datasets import Dataset

from ..data.prepare import column_values
from ..errors import DataError, RecipeError
from ..recipe import AUTO
from .text_pooling import checkpoint_json

AUTO_PERCENTILE = 95
"""``max_length: auto`` keeps this share of the training texts whole (in percent)."""
UNLIMITED = 1_000_000
"""Tokenizers without a limit say ``int(1e30)``; anything above this is no limit."""
SENTENCE_TRANSFORMERS_CONFIG = "sentence_bert_config.json"
HEAD_SHARE = 0.25
"""``head_tail``: the share of the content budget taken from the start (Sun et al.: 128 of 512)."""


# ------------------------------------------------------------------------------------------ the model's limit

@dataclass(frozen=True)
class TokenLimit:
    """The most tokens the checkpoint reads: ``tokens`` (what ``auto`` caps at, the smallest limit it states,
    named by ``source``) and ``hard`` (its position embeddings or the tokenizer's limit: longer input fails)."""

    tokens: int | None
    source: str
    hard: int | None

    def describe(self) -> str:
        return f"{self.tokens} ({self.source})" if self.tokens else "none known"


def model_token_limit(config: Any, tokenizer: Any, location: str | None = None,
                      revision: str | None = None) -> TokenLimit:
    """From the sentence-transformers config (``max_seq_length``: what the encoder was trained on), the config's
    ``max_position_embeddings``, the tokenizer's ``model_max_length``, and what a trained folder recorded."""
    hard: list[tuple[int, str]] = []
    encoder = getattr(config, "encoder_config", None) or config  # a mean-pooled classifier wraps its encoder's
    positions = getattr(encoder, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        hard.append((positions, "max_position_embeddings"))
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < UNLIMITED:
        hard.append((model_max, "the tokenizer's model_max_length"))
    soft: list[tuple[int, str]] = []
    recorded = (getattr(config, "tokenization", None) or {}).get("model_limit")
    if isinstance(recorded, int) and recorded > 0:
        soft.append((recorded, "the limit recorded when this model was trained"))
    settings = checkpoint_json(location, SENTENCE_TRANSFORMERS_CONFIG, revision) if location else None
    seq = settings.get("max_seq_length") if isinstance(settings, dict) else None
    if isinstance(seq, int) and seq > 0:
        soft.append((seq, "sentence-transformers max_seq_length"))
    stated = soft + hard
    if not stated:
        return TokenLimit(None, "no limit known", None)
    tokens, source = min(stated, key=lambda item: item[0])
    return TokenLimit(tokens, source, min(n for n, _ in hard) if hard else None)


# ------------------------------------------------------------------------------------------ lengths

def text_values(batch: dict[str, list], column: str) -> list[str]:
    """A batch's texts; a non-text value is a ``DataError`` naming the column."""
    values = batch[column]
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise DataError(f"Column '{column}' holds a non-text value ({values[bad[0]]!r}); fill or drop those rows.")
    return list(values)


def token_lengths(split: Dataset, tokenizer: Any, text: str, pair: str | None, fingerprint: str | None,
                  name: str) -> np.ndarray:
    """Tokens per example, special tokens included, before any truncation (cached by ``datasets`` under
    ``fingerprint``, as the encoded splits are)."""
    if not len(split):
        return np.zeros(0, dtype=np.int64)

    def count(batch: dict[str, list]) -> dict[str, list[int]]:
        encoded = tokenizer(text_values(batch, text), text_values(batch, pair) if pair else None, verbose=False,
                            return_attention_mask=False, return_token_type_ids=False)
        return {"length": [len(ids) for ids in encoded["input_ids"]]}

    counted = split.map(count, batched=True, remove_columns=split.column_names, desc=f"Counting tokens ({name})",
                        new_fingerprint=fingerprint)
    return np.asarray(column_values(counted, "length"), dtype=np.int64)


def length_summary(lengths: np.ndarray, max_length: int) -> dict[str, Any]:
    """The distribution of token counts and how many texts ``max_length`` cuts, for the log, check and metrics."""
    if not len(lengths):
        return {"texts": 0}
    cut = int((lengths > max_length).sum())
    return {"texts": int(len(lengths)), "median": int(np.median(lengths)),
            f"p{AUTO_PERCENTILE}": int(np.percentile(lengths, AUTO_PERCENTILE, method="higher")),
            "max": int(lengths.max()), "truncated": cut, "truncated_share": round(cut / len(lengths), 4)}


def choose_max_length(setting: int | str, lengths: np.ndarray, limit: TokenLimit,
                      recorded: int | None = None) -> tuple[int, str]:
    """``data.max_length`` for these texts and this model, and why, in words.

    ``auto``: the ``AUTO_PERCENTILE`` of ``lengths`` (the training split), else what a trained folder recorded
    (evaluating it on new data keeps its training length), capped at ``limit``. A number is kept unless the model
    cannot read that many tokens (its hard limit).
    """
    if setting != AUTO:
        if limit.hard is not None and setting > limit.hard:
            return limit.hard, f"data.max_length {setting} capped at the model's limit {limit.hard}"
        return int(setting), "data.max_length"
    if len(lengths):
        chosen = int(np.percentile(lengths, AUTO_PERCENTILE, method="higher"))
        why = f"auto: {AUTO_PERCENTILE}th percentile of the training texts"
    elif recorded:
        chosen, why = int(recorded), "auto: the length this model was trained with"
    else:
        chosen, why = limit.tokens or 512, "auto: the model's limit (no training texts to measure)"
    if limit.tokens is not None and chosen > limit.tokens:
        chosen, why = limit.tokens, f"{why}, capped at the model's limit {limit.describe()}"
    return max(chosen, 8), why


# ------------------------------------------------------------------------------------------ truncation

def keep_tail(content: int, budget: int) -> list[int]:
    return list(range(content - budget, content))


def keep_head_tail(content: int, budget: int) -> list[int]:
    head = int(budget * HEAD_SHARE)
    return list(range(head)) + list(range(content - (budget - head), content))


#: ``data.truncation`` -> which content tokens (by position) of a text longer than the budget are kept. ``head``
#: is the tokenizer's own truncation, which also handles text pairs.
CUTS: dict[str, Callable[[int, int], list[int]]] = {"tail": keep_tail, "head_tail": keep_head_tail}


CHUNK = "chunk"
"""``data.truncation: chunk``: every token is read, in windows."""


def check_truncation(truncation: str, pair: str | None) -> None:
    """A cut that keeps the end of one text, or windows over one text, cannot choose between the two texts of a pair."""
    if (truncation in CUTS or truncation == CHUNK) and pair:
        raise RecipeError(f"'data.truncation' = {truncation} reads one text; this data has text pairs (column "
                          f"'{pair}'). Use truncation: head, which shortens the longer text of each pair.")


def kept_positions(special: list[int], max_length: int, truncation: str) -> list[int] | None:
    """Positions to keep of one encoded text (its special-tokens mask), ``None`` when it fits whole."""
    total = len(special)
    if total <= max_length:
        return None
    lead = next((i for i, s in enumerate(special) if not s), total)
    trail = next((i for i, s in enumerate(reversed(special)) if not s), 0)
    content = total - lead - trail
    budget = max(max_length - lead - trail, 1)
    kept = CUTS[truncation](content, min(budget, content))
    return [*range(lead), *(lead + i for i in kept), *range(total - trail, total)]


def encode_texts(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int,
                 truncation: str) -> dict[str, list]:
    """Token ids, attention masks (and token types) of texts cut to ``max_length`` the way ``truncation`` says."""
    if truncation not in CUTS:
        return dict(tokenizer(texts, pairs, truncation=True, max_length=max_length))
    encoded = tokenizer(texts, return_special_tokens_mask=True, verbose=False)
    special = encoded.pop("special_tokens_mask")
    output: dict[str, list] = {key: [] for key in encoded}
    for index, mask in enumerate(special):
        positions = kept_positions(mask, max_length, truncation)
        for key, values in encoded.items():
            row = values[index]
            output[key].append(row if positions is None else [row[i] for i in positions])
    return output


# ------------------------------------------------------------------------------------------ windows (chunk)

@dataclass(frozen=True)
class Windows:
    """How ``truncation: chunk`` cuts a text into windows: ``max_length`` tokens each (special tokens included),
    ``overlap`` tokens shared by neighbours, at most ``max_chunks`` per text."""

    max_length: int
    overlap: int
    max_chunks: int
    special: int
    """Special tokens the tokenizer adds to each window."""

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, max_length: int, overlap: int, max_chunks: int) -> "Windows":
        if not getattr(tokenizer, "is_fast", False):
            raise RecipeError(f"'data.truncation' = {CHUNK} needs a fast (Rust) tokenizer; {type(tokenizer).__name__} "
                              "is not one. Use truncation: head_tail, or a checkpoint with a tokenizer.json.")
        special = tokenizer.num_special_tokens_to_add()
        if overlap >= max_length - special:
            raise RecipeError(f"'data.chunk_overlap' = {overlap} leaves no new tokens in windows of {max_length} "
                              f"({special} of them special); set it below {max_length - special}, e.g. "
                              f"{(max_length - special) // 4}.")
        return cls(max_length, overlap, max_chunks, special)

    @classmethod
    def from_config(cls, tokenizer: Any, recorded: dict[str, Any]) -> "Windows":
        """The windows a trained model was trained on (``config.tokenization``)."""
        return cls.for_tokenizer(tokenizer, int(recorded["max_length"]), int(recorded.get("chunk_overlap", 0)),
                                 int(recorded.get("max_chunks", 1)))

    def to_config(self) -> dict[str, int]:
        return {"chunk_overlap": self.overlap, "max_chunks": self.max_chunks}

    def count(self, lengths: np.ndarray) -> np.ndarray:
        """Windows per text from its token count (special tokens included), before ``max_chunks``."""
        content = np.maximum(np.asarray(lengths, dtype=np.int64) - self.special, 0)
        room = self.max_length - self.special
        extra = np.ceil(np.maximum(content - room, 0) / (room - self.overlap)).astype(np.int64)
        return 1 + extra

    def summary(self, lengths: np.ndarray) -> dict[str, Any]:
        """Rows the texts become, how many texts span several windows and how many lose their end to
        ``max_chunks``, for the log, check and metrics."""
        counts = self.count(lengths)
        kept = np.minimum(counts, self.max_chunks)
        over = int((counts > self.max_chunks).sum())
        return {"windows": int(kept.sum()), "texts_in_several_windows": int((counts > 1).sum()),
                "texts_beyond_max_chunks": over, "beyond_max_chunks_share": round(over / max(len(counts), 1), 4)}

    def encode(self, tokenizer: Any, texts: list[str]) -> tuple[dict[str, list], list[int]]:
        """Token ids (and masks) of every window, and the index in ``texts`` each window belongs to."""
        encoded = dict(tokenizer(texts, truncation=True, max_length=self.max_length, stride=self.overlap,
                                 return_overflowing_tokens=True, verbose=False))
        owners = list(encoded.pop("overflow_to_sample_mapping"))
        keep, seen = [], {}
        for row, owner in enumerate(owners):
            seen[owner] = seen.get(owner, 0) + 1
            if seen[owner] <= self.max_chunks:
                keep.append(row)
        if len(keep) < len(owners):
            encoded = {key: [values[row] for row in keep] for key, values in encoded.items()}
            owners = [owners[row] for row in keep]
        return encoded, owners
