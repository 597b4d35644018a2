"""Name -> component registries for strategies and methods, chosen by name in the recipe."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .config_utils import closest
from .errors import RecipeError

T = TypeVar("T", bound=type)


class Registry(dict[str, T], Generic[T]):
    """A ``dict`` of component classes whose ``register`` decorator also stamps ``cls.name``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            cls.name = name
            self[name] = cls
            return cls

        return decorate

    def lookup(self, name: str) -> T:
        """The class registered as ``name``, or a recipe error with the closest name and the choices."""
        if name not in self:
            hint = closest(name, self)
            raise RecipeError(f"Unknown {self.kind} '{name}'." + (f" Did you mean '{hint}'?" if hint else "")
                              + f" Available: {self.available()}.")
        return self[name]

    def available(self) -> str:
        return ", ".join(sorted(self))
