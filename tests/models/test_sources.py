"""Model folders: pickled weights are refused before anything unpickles them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from hf_transfer import Recipe
from hf_transfer.errors import ModelError
from hf_transfer.models import sources
from hf_transfer.models.sources import resolve_model_source
from hf_transfer.tasks.text import TextClassification


class Booby:
    """Unpickling this creates the folder ``path``: proof that something unpickled the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def legacy_folder(root: Path, bert: Path) -> tuple[Path, Path]:
    folder, sentinel = root / "legacy", root / "unpickled"
    folder.mkdir()
    (folder / "config.json").write_bytes((bert / "config.json").read_bytes())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if (bert / name).exists():
            (folder / name).write_bytes((bert / name).read_bytes())
    with (folder / "pytorch_model.bin").open("wb") as handle:
        pickle.dump({"bert.embeddings.word_embeddings.weight": Booby(sentinel)}, handle)
    return folder, sentinel


def test_a_folder_with_only_pytorch_model_bin_is_refused_unopened(tiny_bert_dir, tmp_path):
    folder, sentinel = legacy_folder(tmp_path, tiny_bert_dir)
    with pytest.raises(ModelError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors only"):
        resolve_model_source(str(folder), "text-classification")
    assert not sentinel.exists()


def test_hub_style_loading_also_requires_safetensors(tiny_bert_dir, tmp_path, monkeypatch):
    """Behind the pre-flight, from_pretrained(use_safetensors=True) refuses the .bin rather than loading it."""
    folder, sentinel = legacy_folder(tmp_path, tiny_bert_dir)
    monkeypatch.setattr(sources, "refuse_pickled_weights", lambda path, name, field: None)
    recipe = Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": str(folder)},
                               "data": {"path": "unused"}})
    with pytest.raises(ModelError, match="model.safetensors"):
        TextClassification().load_model(recipe, ["negative", "positive"])
    assert not sentinel.exists()


def test_safetensors_next_to_a_legacy_bin_is_accepted(tiny_bert_dir, tmp_path):
    folder = tmp_path / "both"
    folder.mkdir()
    for item in tiny_bert_dir.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"ignored")
    assert resolve_model_source(str(folder), "text-classification").kind == "local"
