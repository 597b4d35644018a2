"""Freezing helpers shared by the strategies."""

from __future__ import annotations

from typing import Iterable

from torch import nn


def set_trainable(model: nn.Module, names: Iterable[str], trainable: bool) -> None:
    wanted = set(names)
    for name, parameter in model.named_parameters():
        if name in wanted:
            parameter.requires_grad_(trainable)


class FrozenModulesInEval:
    """Keeps fully frozen sub-modules in eval mode whenever the model runs in training mode.

    ``Trainer`` calls ``model.train()`` before every step, which would put BatchNorm layers of a
    frozen backbone back into training mode (their running statistics drift) and re-enable its
    dropout. A forward pre-hook restores eval mode for them; it works under any training loop.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.frozen: list[nn.Module] = []
        self._handle = model.register_forward_pre_hook(self._hook)

    def refresh(self) -> None:
        """Recompute the frozen set; call after changing ``requires_grad``."""
        self.frozen = []
        covered: set[str] = set()
        for name, module in self.model.named_modules():
            if not name or any(name.startswith(prefix + ".") for prefix in covered):
                continue
            parameters = list(module.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                self.frozen.append(module)
                covered.add(name)

    def _hook(self, model: nn.Module, _args) -> None:
        if model.training:
            for module in self.frozen:
                module.eval()

    def remove(self) -> None:
        self._handle.remove()
