"""Transfer methods, registered by name and chosen in the recipe's optional ``method`` section.

A method adds what else the run learns from (the source weights, a teacher, unlabelled target data) as
extra loss terms inside ``TransferTrainer.compute_loss``. Adding one is one new module with a ``Method``
subclass decorated by ``@METHODS.register("name")`` and one import line below.
"""

from __future__ import annotations

from typing import Any

from ..registry import METHODS
from .base import Method

register_method = METHODS.register


def get_method(name: str) -> type[Method]:
    return METHODS.lookup(name)


def create_method(name: str, options: Any) -> Method:
    return get_method(name)(options)


from . import dann, distillation, l2sp  # noqa: E402,F401  (registration)

__all__ = ["Method", "METHODS", "register_method", "get_method", "create_method"]
