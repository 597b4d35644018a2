"""Transfer strategies, registered by name and chosen in the recipe's ``strategy`` section.

Adding a strategy is one new module with a ``Strategy`` subclass decorated by
``@STRATEGIES.register("name")`` and one import line below.
"""

from __future__ import annotations

from ..registry import STRATEGIES
from .base import Strategy

register_strategy = STRATEGIES.register


def get_strategy(name: str) -> type[Strategy]:
    return STRATEGIES.lookup(name)


def create_strategy(name: str, options, layout, part_rates: dict[str, float] | None = None) -> Strategy:
    return get_strategy(name)(options, layout, part_rates)


from . import full, gradual_unfreeze, layerwise_lr, linear_probe, partial  # noqa: E402,F401  (registration)
from . import bitfit, lora  # noqa: E402,F401  (registration; after the others, which keep their order)

__all__ = ["Strategy", "STRATEGIES", "register_strategy", "get_strategy", "create_strategy"]
