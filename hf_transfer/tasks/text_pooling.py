"""A sequence classifier over the mean of a text encoder's token states (``model.pooling: mean``).

sentence-transformers checkpoints (all-MiniLM-L6-v2, all-mpnet-base-v2, ...) are trained so that the mean of
their last hidden states is the sentence vector; their ``[CLS]`` state and BERT's pooler on top of it were never
trained for that, and a classifier reading them starts from a worse feature. transformers' own
``...ForSequenceClassification`` heads read ``[CLS]``, so this model wraps any ``AutoModel`` encoder with a
masked mean and one linear layer instead.

It is a plain ``PreTrainedModel``: its config holds the encoder's config, its weights are one safetensors file,
and importing ``hf_transfer`` registers it with ``AutoConfig``, ``AutoModel`` and
``AutoModelForSequenceClassification``, so ``pipeline("text-classification", model=folder)`` loads a saved
folder without ``trust_remote_code`` (as the fused image-text model does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import cached_file

from ..errors import RecipeError
from ..recipe import AUTO

MODEL_TYPE = "hf_transfer_text_pooled"
POOLINGS = ("mean",)
"""What this model pools; ``cls`` is transformers' own sequence classifiers, unchanged."""
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class PooledTextConfig(PretrainedConfig):
    """The encoder's config, the pooling and the head's dropout."""

    model_type = MODEL_TYPE
    has_no_defaults_at_init = True

    def __init__(self, encoder_config: dict | PretrainedConfig | None = None, pooling: str = "mean",
                 classifier_dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(encoder_config, dict):
            encoder_config = dict(encoder_config)
            encoder_config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
        self.encoder_config = encoder_config
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["encoder_config"] = self.encoder_config.to_dict() if self.encoder_config is not None else None
        return output


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real (unpadded) tokens' states, as sentence-transformers' ``Pooling(mean)`` computes it."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class PooledTextForSequenceClassification(PreTrainedModel):
    config_class = PooledTextConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []

    def __init__(self, config: PooledTextConfig, encoder: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder_config)
        if isinstance(getattr(self.encoder, "pooler", None), nn.Module):
            self.encoder.pooler = None  # BERT's pooler reads [CLS]: never used here, so never trained or saved
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.encoder_config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Only the head is ours to initialise; the encoder comes initialised (or pretrained)."""
        if module is getattr(self, "classifier", None):
            nn.init.normal_(module.weight, std=getattr(self.config.encoder_config, "initializer_range", 0.02))
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    # ------------------------------------------------------------------ the split the feature cache uses

    def tower_features(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """The frozen part: the pooled sentence vector."""
        if input_ids is None:
            raise ValueError("Pass input_ids (and attention_mask).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return mean_pool(self.encoder(**inputs).last_hidden_state, attention_mask)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features.to(self.classifier.weight.dtype)))

    def head_modules(self) -> list[nn.Module]:
        return [self.dropout, self.classifier]

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        logits = self.logits_from_features(self.tower_features(input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ------------------------------------------------------------------------------------------ which pooling

def checkpoint_json(location: str, name: str, revision: str | None = None) -> Any:
    """A JSON file of a checkpoint (local folder or Hub id, cached or offline-safe), or ``None`` if it has none."""
    try:
        path = cached_file(location, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, _raise_exceptions_for_gated_repo=False)
    except (OSError, ValueError):
        return None
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


SENTENCE_TRANSFORMERS_MODULES = "modules.json"
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last token",
                 "pooling_mode_weightedmean_tokens": "weighted mean", "pooling_mode_mean_sqrt_len_tokens": "mean/sqrt"}
"""sentence-transformers ``Pooling`` config keys -> what they pool."""


def checkpoint_pooling(location: str, revision: str | None = None) -> str | None:
    """What a sentence-transformers checkpoint pools (``mean``, ``cls``, ...), from its ``Pooling`` module's
    config (the folder ``modules.json`` names, ``1_Pooling`` by default); ``None`` for other checkpoints."""
    modules = checkpoint_json(location, SENTENCE_TRANSFORMERS_MODULES, revision)
    folder = next((m.get("path") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")),
                  None) if isinstance(modules, list) else None
    settings = checkpoint_json(location, f"{folder or '1_Pooling'}/config.json", revision)
    if not isinstance(settings, dict):
        return None
    return next((mode for key, mode in POOLING_MODES.items() if settings.get(key)), None)


def choose_pooling(setting: str, config: PretrainedConfig, location: str, revision: str | None = None) -> str:
    """``model.pooling`` for this checkpoint: a trained mean-pooled folder keeps its own; ``auto`` is ``mean``
    when the checkpoint's sentence-transformers config pools by mean, else ``cls`` (transformers' classifier)."""
    if getattr(config, "model_type", None) == MODEL_TYPE:
        if setting not in (AUTO, config.pooling):
            raise RecipeError(f"'model.pooling' = {setting}, but '{location}' is a {config.pooling}-pooled "
                              f"classifier trained by hf-transfer; set model.pooling: {config.pooling} or auto.")
        return config.pooling
    if setting != AUTO:
        return setting
    return "mean" if checkpoint_pooling(location, revision) == "mean" else "cls"


def register_auto_classes() -> None:
    """``AutoConfig`` and the Auto model classes learn the pooled classifier: saved folders load without remote code."""
    AutoConfig.register(MODEL_TYPE, PooledTextConfig, exist_ok=True)
    AutoModel.register(PooledTextConfig, PooledTextForSequenceClassification, exist_ok=True)
    AutoModelForSequenceClassification.register(PooledTextConfig, PooledTextForSequenceClassification, exist_ok=True)


register_auto_classes()
