"""Linear probe / frozen feature extraction: only the new head trains."""

from torch import nn

from . import register_strategy
from .base import Strategy
from .freezing import set_trainable


@register_strategy("linear_probe")
class LinearProbe(Strategy):
    """Freeze the backbone (BatchNorm and dropout kept in eval mode) and train the head.

    The standard measure of how transferable frozen features are (e.g. Kornblith et al., "Do
    Better ImageNet Models Transfer Better?", CVPR 2019).
    """

    freezes_backbone = True

    def prepare(self, model: nn.Module) -> None:
        set_trainable(model, self.layout.backbone(), False)
        set_trainable(model, self.layout.head, True)
        self.keep_frozen_modules_in_eval(model)
