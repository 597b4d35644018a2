"""Shared offline fixtures: tiny random-weight models and small learnable datasets written to disk."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Fail fast instead of retrying when something reaches for the Hub; the tests build everything locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Cached frozen-backbone features go to a scratch folder, never to the user's ~/.cache.
os.environ.setdefault("HF_TRANSFER_CACHE", tempfile.mkdtemp(prefix="hf_transfer_test_cache_"))

TIMM_ARCHITECTURE = "test_efficientnet"
"""timm's own ~100k-parameter test network (BatchNorm, 6 layer groups, head named ``classifier``)."""

IMAGE_CLASSES = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}

POSITIVE_WORDS = ["good", "great", "happy", "love", "nice", "fine", "best", "fun", "warm", "bright"]
NEGATIVE_WORDS = ["bad", "awful", "sad", "hate", "poor", "worst", "dull", "cold", "dark", "boring"]
NEUTRAL_WORDS = ["the", "movie", "film", "was", "a", "very", "and", "it", "this", "plot", "story", "really",
                 "so", "acting", "music", "quite"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session")
def tiny_timm_dir(tmp_path_factory) -> Path:
    """A saved TimmWrapperForImageClassification (test_efficientnet, random weights, 3 labels) folder."""
    import timm
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(0)
    pretrained_cfg = timm.models.get_pretrained_cfg(TIMM_ARCHITECTURE).to_dict()
    config = TimmWrapperConfig(architecture=TIMM_ARCHITECTURE, pretrained_cfg=pretrained_cfg, num_labels=3)
    directory = tmp_path_factory.mktemp("tiny_timm")
    TimmWrapperForImageClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A saved BertForSequenceClassification (32 hidden, 2 layers, 2 labels) folder with its fast tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_bert")
    vocab = SPECIAL_TOKENS + POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5: the fast tokenizer takes ``vocab`` (a path or token->id dict); ``vocab_file`` is ignored.
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True,
                                  model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2,
                        pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_colour_images(root: Path, per_class: dict[str, int], seed: int, size: int = 24) -> None:
    """Write ``root/<class>/<i>.png``: solid class colour plus uniform noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        colour = np.array(IMAGE_CLASSES[name], dtype=np.int16)
        for i in range(count):
            noise = rng.integers(-30, 31, size=(size, size, 3), dtype=np.int16)
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:03d}.png")


@pytest.fixture(scope="session")
def image_folder_data(tmp_path_factory) -> Path:
    """An imagefolder dataset: train/ (13 per class) and test/ (4 per class), classes red/green/blue, 24x24 PNGs."""
    # 39 train images -> 36 after the default 10% validation carve: no training batch of 1 for batch sizes
    # 4/8/16/32 (BatchNorm on a 1x1 feature map fails in train mode with a single example).
    root = tmp_path_factory.mktemp("image_folder")
    write_colour_images(root / "train", {name: 13 for name in IMAGE_CLASSES}, seed=0)
    write_colour_images(root / "test", {name: 4 for name in IMAGE_CLASSES}, seed=1)
    return root


def make_sentences(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (text, label) rows, alternating labels; each sentence holds 1-2 words of its sentiment."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        cue = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
        words = list(rng.choice(NEUTRAL_WORDS, size=int(rng.integers(3, 7))))
        for word in rng.choice(cue, size=int(rng.integers(1, 3)), replace=False):
            words.insert(int(rng.integers(0, len(words) + 1)), str(word))
        rows.append((" ".join(words), label))
    return rows


def write_text_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def text_csv_data(tmp_path_factory) -> Path:
    """A folder with train.csv (40 rows) and test.csv (12 rows), columns text,label (negative/positive)."""
    root = tmp_path_factory.mktemp("text_csv")
    write_text_csv(root / "train.csv", make_sentences(40, seed=0))
    write_text_csv(root / "test.csv", make_sentences(12, seed=1))
    return root


@pytest.fixture
def timm_model(tiny_timm_dir):
    """A fresh tiny timm classifier (strategies freeze and change it in place), seeded head."""
    import torch
    from transformers import TimmWrapperForImageClassification

    torch.manual_seed(0)
    return TimmWrapperForImageClassification.from_pretrained(tiny_timm_dir)


@pytest.fixture
def bert_model(tiny_bert_dir):
    """A fresh tiny BERT classifier with a new head, the same starting weights in every test."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)


@pytest.fixture(scope="module")
def target_images(tmp_path_factory):
    """A DANN target domain: the source's colour classes (``image_folder_data``) with other noise: train 9 per
    class (1 of them validation), test 3 per class."""
    root = tmp_path_factory.mktemp("target_images")
    write_colour_images(root / "train", {"red": 9, "green": 9, "blue": 9}, seed=5, size=20)
    write_colour_images(root / "test", {"red": 3, "green": 3, "blue": 3}, seed=6, size=20)
    return root
