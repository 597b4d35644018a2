"""Transfer strategies, registered by name and chosen in the recipe's ``strategy`` section.

Adding a strategy is one new module with a ``Strategy`` subclass decorated by
``@register_strategy("name")`` and one import line below.
"""

from __future__ import annotations

from ..registry import Registry
from .base import Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
register_strategy = STRATEGIES.register


def get_strategy(name: str) -> type[Strategy]:
    return STRATEGIES[name]


def create_strategy(name: str, options, layout) -> Strategy:
    return STRATEGIES[name](options, layout)


from . import full, gradual_unfreeze, layerwise_lr, linear_probe, partial  # noqa: E402,F401  (registration)

__all__ = ["Strategy", "STRATEGIES", "register_strategy", "get_strategy", "create_strategy"]
