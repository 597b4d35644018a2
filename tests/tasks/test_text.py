"""Text inputs: tokenised splits keep a cheap, content-based fingerprint (datasets' cache and the feature cache)."""

from __future__ import annotations

from transformers import AutoTokenizer

from hf_transfer.data.prepare import prepare_data
from hf_transfer.recipe import Recipe
from hf_transfer.tasks.base import get_task
from hf_transfer.tasks.text import tokenizer_fingerprint


def test_tokenizer_fingerprint_ignores_call_settings_but_not_the_vocabulary(tiny_bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["good film"], truncation=True, max_length=4, padding="max_length")  # leaves state in the backend
    backend = tokenizer.backend_tokenizer
    call_state = (backend.truncation, backend.padding)
    assert call_state[0] is not None and call_state[1] is not None
    assert tokenizer_fingerprint(tokenizer) == before
    assert (backend.truncation, backend.padding) == call_state  # cleared to serialise, then put back
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(tiny_bert_dir)) == before

    tokenizer.add_tokens(["brandnewword"])
    assert tokenizer_fingerprint(tokenizer) != before


def test_encoded_splits_share_a_fingerprint_only_for_the_same_tokenizer_and_length(tiny_bert_dir, text_csv_data):
    task = get_task("text-classification")

    def encoded_fingerprint(max_length: int, extra_token: str | None = None) -> str:
        recipe = Recipe.from_dict({"task": "text-classification", "model": {"name_or_path": str(tiny_bert_dir)},
                                   "data": {"path": str(text_csv_data), "max_length": max_length}})
        data = prepare_data(recipe.data, task.input_roles, seed=0)
        model, tokenizer = task.load_model(recipe, data.label_names)
        if extra_token:
            tokenizer.add_tokens([extra_token])
        inputs = task.model_inputs(recipe, data, model, tokenizer)
        assert inputs.train[0]["input_ids"][0] == tokenizer.cls_token_id
        return inputs.train._fingerprint

    assert encoded_fingerprint(16) == encoded_fingerprint(16)
    assert encoded_fingerprint(16) != encoded_fingerprint(8)
    assert encoded_fingerprint(16) != encoded_fingerprint(16, extra_token="brandnewword")
