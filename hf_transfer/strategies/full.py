"""Plain fine-tuning: every parameter trains with the same learning rate."""

from . import register_strategy
from .base import Strategy


@register_strategy("full")
class FullFineTuning(Strategy):
    """Train all weights; the baseline every other strategy is compared with."""
