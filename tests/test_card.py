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
    assert "**Input:** text truncated to the 95th percentile of the training texts' token counts" in text.text


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


# --- Hub conventions: plain hyperparameters, no local paths, Hub metric types, embedded plots, no placeholder link


def test_hyperparameters_show_enum_values_and_a_warmup_ratio():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    card_inputs = inputs(None, ["d"], with_facts=False)
    card_inputs.hyperparameters = {"learning_rate": 5e-5, "lr_scheduler_type": SchedulerType.COSINE,
                                   "optim": OptimizerNames.ADAMW_TORCH_FUSED, "warmup_steps": 0.1}
    body = render_model_card(card_inputs).text
    assert "| lr_scheduler_type | cosine |" in body and "| optim | adamw_torch_fused |" in body
    assert "SchedulerType" not in body and "OptimizerNames" not in body
    assert "| warmup | ratio 0.1 (3 of 30 optimizer steps) |" in body  # 30 steps in the metrics
    assert "warmup_steps" not in body
    card_inputs.hyperparameters = {"warmup_steps": 50, "lr_scheduler_type": "SchedulerType.LINEAR"}
    body = render_model_card(card_inputs).text
    assert "| warmup | 50 steps |" in body and "| lr_scheduler_type | linear |" in body


def test_local_paths_show_only_their_folder_name(tmp_path):
    from huggingface_hub import ModelCard

    backbone = tmp_path / "models" / "my-backbone"
    backbone.mkdir(parents=True)
    card_inputs = inputs(str(backbone), ["../shared/data/sst2"])
    card_inputs.recipe_yaml = (f"task: image-classification\nmodel:\n  name_or_path: {backbone}\ndata:\n"
                               "  path: ../shared/data/sst2\n  data_files:\n    train: /home/me/data/train.csv\n"
                               "output:\n  dir: runs/sst2\n  hub_model_id: me/pets\n")
    card_inputs.metrics["stages"] = [{"stage": "one", "data": "../shared/data/sst2 (default)",
                                      "started_from": "~/models/start", "metrics": {"test": report(0.7)}}]
    path = write_model_card(card_inputs, tmp_path)
    text = path.read_text(encoding="utf-8")
    for leak in (str(tmp_path), "../shared", "shared/data", "/home/me", "~/models", "runs/sst2"):
        assert leak not in text, leak
    assert "- **Data:** `sst2`;" in text and "`my-backbone`" in text
    assert "path: sst2" in text and "name_or_path: my-backbone" in text and "train: train.csv" in text
    assert "hub_model_id: me/pets" in text  # Hub ids stay
    assert "| one | `sst2 (default)` | start |" in text
    data = ModelCard.load(path).data.to_dict()
    assert data["model-index"][0]["results"][0]["dataset"] == {"name": "sst2", "type": "sst2", "split": "test"}


def test_display_name_keeps_hub_ids_and_shortens_paths():
    from hf_transfer.card import display_name

    assert display_name("uoft-cs/cifar10") == "uoft-cs/cifar10"
    assert display_name("pypi:all-MiniLM-L6-v2") == "pypi:all-MiniLM-L6-v2"
    assert display_name("sklearn:digits") == "sklearn:digits"
    assert display_name("random:./models/tiny") == "random:tiny"
    assert display_name("../shared/data/sst2") == "sst2"
    assert display_name("/abs/data/cifar10/") == "cifar10"
    assert display_name("C:\\Users\\me\\data") == "data"
    assert display_name("a/b/c") == "c"
    assert display_name("https://example.org/data.csv") == "https://example.org/data.csv"


def test_metric_types_are_hub_metric_ids_with_the_average_in_args():
    card = render_model_card(inputs(None, ["uoft-cs/cifar10"]))
    data = card.data.to_dict()
    assert data["metrics"] == ["accuracy", "precision", "recall", "f1"]
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert {m["type"] for m in metrics} == {"accuracy", "precision", "recall", "f1"}
    by_name = {m["name"]: m for m in metrics}
    assert by_name["F1 (macro)"]["type"] == "f1" and by_name["F1 (macro)"]["args"] == {"average": "macro"}
    assert by_name["F1 (weighted)"]["args"] == {"average": "weighted"}
    assert by_name["Precision (macro)"]["value"] == 0.5 and "args" not in by_name["Accuracy"]
    assert not any("_" in m["type"] for m in metrics)


def test_plots_are_embedded_when_their_files_exist(tmp_path):
    card_inputs = inputs(None, ["d"], with_facts=False)
    (tmp_path / "confusion_matrix.png").write_bytes(b"png")
    text = write_model_card(card_inputs, tmp_path).read_text(encoding="utf-8")
    assert "](confusion_matrix.png)" in text and "learning_curves.png" not in text
    (tmp_path / "learning_curves.png").write_bytes(b"png")
    text = write_model_card(card_inputs, tmp_path).read_text(encoding="utf-8")
    assert "](confusion_matrix.png)" in text and "](learning_curves.png)" in text
    # the images come right after the results table, before the per-class table
    results = text.split("## Results")[1].split("### Per class")[0]
    assert "![" in results and "](learning_curves.png)" in results
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "![" not in write_model_card(card_inputs, empty).read_text(encoding="utf-8")


def test_the_card_reads_like_a_hub_card_and_links_no_placeholder():
    text = render_model_card(inputs("timm/mobilenetv2_100.ra_in1k", ["d"])).text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Results", "## How to use", "## Intended uses and limitations", "## Training"]
    assert "### Framework versions" in text and "- transformers " in text
    assert "github.com/hf-transfer/hf-transfer" not in text
    assert "Trained with hf-transfer." in text or "Trained with [hf-transfer](http" in text


def test_confusion_matrix_title_fits_for_two_classes(tmp_path, monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from hf_transfer.evaluation import plots

    figures = []
    make = plots.new_figure
    monkeypatch.setattr(plots, "new_figure", lambda *a, **k: figures.append(make(*a, **k)) or figures[-1])
    for labels in (["cat", "dog"], ["negative", "a rather long class name"]):
        plots.save_confusion_matrix([[16004, 4], [8, 12]], labels, tmp_path / "cm.png")
        figure = figures[-1]
        renderer = FigureCanvasAgg(figure).get_renderer()
        figure.draw(renderer)
        box = figure.bbox
        texts = [t for t in figure.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))
                 if t.get_visible() and t.get_text()]
        assert any("Confusion matrix" in t.get_text() for t in texts)
        for text in texts:
            extent = text.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (text.get_text(), extent, box)
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, (text.get_text(), extent, box)


def test_backbone_selection_names_local_candidates_by_folder(tmp_path):
    card_inputs = inputs(None, ["d"], with_facts=False)
    local = str(tmp_path / "models" / "tiny_timm")
    card_inputs.metrics["backbone_selection"] = {
        "results": [{"candidate": local, "scores": {"logme": 1.5}, "rank": 1},
                    {"candidate": f"random:{local}", "scores": {"logme": 0.5}, "rank": 2},
                    {"candidate": "timm/resnet18.a1_in1k", "scores": {"logme": 0.1}, "rank": 3}],
        "rank_by": "logme", "task": "image-classification", "data": "../shared/data/cifar10", "num_samples": 24,
        "num_classes": 3}
    text = render_model_card(card_inputs).text
    selection = text.split("### Backbone selection")[1].split("### Per class")[0]
    assert "`tiny_timm`" in selection and "`random:tiny_timm`" in selection and "`timm/resnet18.a1_in1k`" in selection
    assert "examples of cifar10" in selection
    assert str(tmp_path) not in text and "../shared" not in text
