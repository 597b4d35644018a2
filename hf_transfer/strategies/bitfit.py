"""BitFit: only the bias terms of the backbone train, with the new head.

Ben Zaken, Ravfogel and Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models", ACL 2022 (arXiv:2106.10199, 2021). Every parameter of the backbone named ``bias`` trains:
the attention, MLP and normalisation biases of a transformer (LayerNorm's beta included, as in the paper), and
the BatchNorm shifts of a convolutional network (its convolutions usually have no bias). Everything else of the
backbone stays frozen; the new classification head (BERT's pooler included) trains fully. Under 0.1 % of a
BERT-base backbone trains, the saved model is a normal one (nothing to merge), and the feature cache is not used.
"""

from torch import nn

from ..errors import RecipeError
from . import register_strategy
from .base import Strategy
from .freezing import set_trainable


def is_bias(name: str) -> bool:
    return name == "bias" or name.endswith(".bias")


@register_strategy("bitfit")
class BitFit(Strategy):
    """Train the backbone's bias terms and the head (Zaken et al. 2021)."""

    def prepare(self, model: nn.Module) -> None:
        backbone = self.layout.backbone()
        biases = [name for name in backbone if is_bias(name)]
        if not biases:
            raise RecipeError(f"'strategy: bitfit': the backbone of {type(model).__name__} has no bias parameters; "
                              "use 'linear_probe' or 'lora'.")
        set_trainable(model, (name for name, _ in model.named_parameters()), False)
        set_trainable(model, biases, True)
        set_trainable(model, self.layout.head, True)
