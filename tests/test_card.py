"""Model card: Hub metadata that validates (model-index, base_model), a body with the results."""

from __future__ import annotations

import pytest

from hf_transfer.card import CardInputs, hub_id, render_model_card, write_model_card
from hf_transfer.recipe import Recipe
from hf_transfer.tasks.base import get_task


def report(accuracy: float) -> dict:
    return {"accuracy": accuracy, "precision_macro": 0.5, "recall_macro": 0.5, "f1_macro": accuracy - 0.01,
            "precision_weighted": 0.5, "recall_weighted": 0.5, "f1_weighted": 0.5, "num_samples": 40,
            "per_class": {"cat": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 20},
                          "dog": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 20}},
            "confusion_matrix": [[16, 4], [8, 12]]}


def inputs(base_model: str | None, datasets: list[str], with_scratch: bool = False,
           task: str = "image-classification", hub_model_id: str | None = None, with_facts: bool = True) -> CardInputs:
    facts = None
    if with_facts:
        recipe = Recipe.from_dict({"task": task, "model": {"name_or_path": "x"},
                                   "data": {"path": "d", "image_size": 64}, "output": {"hub_model_id": hub_model_id}})
        facts = get_task(task).card_facts(recipe)
    metrics = {"labels": ["cat", "dog"], "validation": report(0.7), "test": report(0.75),
               "train": {"runtime_s": 12.0, "steps": 30, "epochs": 3.0}}
    if with_scratch:
        metrics["scratch"] = {"test": report(0.55)}
    return CardInputs(model_name="pets", task=task, base_model=base_model, datasets=datasets,
                      label_names=["cat", "dog"], strategy="linear_probe", strategy_options={"name": "linear_probe"},
                      hyperparameters={"learning_rate": 0.001}, data_summary={"train": 100, "test": 40},
                      metrics=metrics, license="apache-2.0", tags=["pets"], recipe_yaml="task: image-classification\n",
                      facts=facts)


@pytest.mark.parametrize(("name", "expected"), [
    ("timm/mobilenetv2_100.ra_in1k", "timm/mobilenetv2_100.ra_in1k"),
    ("pypi:mobilenetv2_100.tv_in1k", "timm/mobilenetv2_100.tv_in1k"),
    ("pypi:all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    ("./models/local", None),
    ("mobilenetv2_100", None),
    (None, None),
])
def test_hub_id_keeps_only_names_the_hub_knows(name, expected):
    assert hub_id(name) == expected


def test_card_metadata_and_body(tmp_path):
    from huggingface_hub import ModelCard

    path = write_model_card(inputs("pypi:mobilenetv2_100.tv_in1k", ["uoft-cs/cifar10"], with_scratch=True), tmp_path)
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["base_model"] == "timm/mobilenetv2_100.tv_in1k"
    assert data["datasets"] == ["uoft-cs/cifar10"]
    assert data["pipeline_tag"] == "image-classification" and data["license"] == "apache-2.0"
    assert "pets" in data["tags"] and "hf-transfer" in data["tags"]
    results = data["model-index"][0]["results"][0]
    assert results["dataset"]["type"] == "uoft-cs/cifar10" and results["dataset"]["split"] == "test"
    assert {m["type"]: m["value"] for m in results["metrics"]}["accuracy"] == 0.75
    body = card.text
    assert "| accuracy | 75.00% |" in body
    assert "| dog | 0.700 | 0.600 | 0.650 | 20 |" in body
    assert "+20.00 pts" in body  # transfer gain over the scratch baseline
    assert 'pipeline("image-classification"' in body


def test_local_base_model_and_data_stay_out_of_the_metadata(tmp_path):
    from huggingface_hub import ModelCard

    local = tmp_path / "my-backbone"
    local.mkdir()
    data = ModelCard.load(write_model_card(inputs(str(local), [str(tmp_path / "data")]), tmp_path)).data.to_dict()
    assert "base_model" not in data and "datasets" not in data
    assert data["model-index"][0]["results"][0]["dataset"]["name"] == "data"


def test_how_to_use_and_metadata_come_from_the_task_adapter():
    image = render_model_card(inputs("timm/mobilenetv2_100.ra_in1k", ["d"], hub_model_id="me/pets"))
    assert image.data.library_name == "timm" and "timm" in image.data.tags
    assert 'pipeline("image-classification", model="me/pets")' in image.text
    assert 'timm.create_model("hf-hub:me/pets", pretrained=True)' in image.text
    assert "**Input:** images at 64 px" in image.text
    text = render_model_card(inputs("pypi:all-MiniLM-L6-v2", ["d"], task="text-classification"))
    assert text.data.library_name == "transformers" and text.data.pipeline_tag == "text-classification"
    assert 'pipeline("text-classification", model="path/to/this/folder")' in text.text
    assert "timm" not in text.text.split("## How to use")[1].split("## Training")[0]
    assert "**Input:** text truncated to 128 tokens" in text.text


def test_a_task_without_adapter_facts_still_gets_a_card():
    card = render_model_card(inputs(None, ["d"], task="tabular-classification", with_facts=False))
    assert card.data.pipeline_tag == "tabular-classification" and "tabular-classification" in card.data.tags
    assert "A tabular classification model for 2 classes" in card.text


def test_each_input_alone_vs_fused_table():
    card_inputs = inputs(None, ["d"], with_facts=False)
    card_inputs.metrics["compare_modalities"] = {
        "split": "test",
        "runs": {"image-only": {"accuracy": 0.6, "f1_macro": 0.55}, "text-only": {"accuracy": 0.7, "f1_macro": 0.68},
                 "fused": {"accuracy": 0.75, "f1_macro": 0.74}},
        "fusion_gain": {"accuracy": 0.05, "f1_macro": 0.06}}
    body = render_model_card(card_inputs).text
    assert "### Each input alone vs fused" in body and "image-only, text-only" in body
    assert "| image-only | 60.00% | 55.00% |" in body
    assert "| text-only | 70.00% | 68.00% |" in body
    assert "| fused | 75.00% | 74.00% |" in body
    assert "**+5.00 pts** | **+6.00 pts** |" in body
    plain = render_model_card(inputs(None, ["d"], with_facts=False)).text
    assert "Each input alone" not in plain and "Rows without an input" not in plain and "Class weights" not in plain


def test_rows_without_an_input_are_counted_with_what_happened_to_them():
    card_inputs = inputs(None, ["d"], with_facts=False)
    card_inputs.metrics["missing_inputs"] = {"train": {"image": 3, "text": 1}, "test": {"image": 0, "text": 2}}
    card_inputs.recipe_yaml = "task: image-text-classification\ndata:\n  path: d\n  missing_modality: learn\n"
    body = render_model_card(card_inputs).text
    assert ("- **Rows without an input:** train: 3 without image, 1 without text; test: 2 without text "
            "(`data.missing_modality: learn`: kept, the model using a learned stand-in for the missing input)") in body


def test_class_weights_line_in_the_training_section():
    card_inputs = inputs(None, ["d"], with_facts=False)
    card_inputs.metrics["train"]["class_weights"] = {"cat": 0.75, "dog": 1.5}
    card_inputs.recipe_yaml = "data:\n  path: d\n  class_weights: balanced\n"
    training = render_model_card(card_inputs).text.split("## Training")[1]
    assert "- **Class weights:** cat 0.75, dog 1.5 (balanced: " in training
    assert "class-weighted cross-entropy" in training
    card_inputs.recipe_yaml = "data:\n  path: d\n  class_weights: [0.75, 1.5]\n"
    assert "cat 0.75, dog 1.5 (from the recipe)" in render_model_card(card_inputs).text
