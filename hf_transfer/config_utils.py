"""Build dataclasses from plain dicts (YAML, ``--set``) with errors that name the field.

``dacite``-like libraries exist, but none gives "did you mean" hints for misspelt keys and full
dotted field paths in every message, which is what recipe users need most.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Iterable

import yaml

from .errors import RecipeError


def closest(name: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_error(key: str, where: str, valid: Iterable[str]) -> RecipeError:
    valid = sorted(valid)
    hint = closest(key, valid)
    suggestion = f" Did you mean '{hint}'?" if hint else ""
    listing = f" Valid keys here: {', '.join(valid)}." if len(valid) <= 25 else ""
    return RecipeError(f"Unknown key '{where}{key}'.{suggestion}{listing}")


def coerce(value: Any, annotation: Any, field_path: str) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to ``annotation`` or raise RecipeError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, field_path)
            except RecipeError as error:
                errors.append(str(error))
        raise RecipeError(errors[0] if len(errors) == 1 else f"'{field_path}': {value!r} fits none of {annotation}.")
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"'{field_path}' must be one of {', '.join(map(repr, args))}; got {value!r}.")
        return value
    if origin is list or origin is tuple:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"'{field_path}' must be a list; got {value!r}.")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{field_path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"'{field_path}' must be a mapping; got {value!r}.")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, field_path + ".")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise RecipeError(f"'{field_path}' must be true or false; got {value!r}.")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise RecipeError(f"'{field_path}' must be an integer; got {value!r}.")
        try:
            number = float(value)
        except ValueError:
            raise RecipeError(f"'{field_path}' must be an integer; got {value!r}.") from None
        if not number.is_integer():
            raise RecipeError(f"'{field_path}' must be an integer; got {value!r}.")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise RecipeError(f"'{field_path}' must be a number; got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"'{field_path}' must be a number; got {value!r}.") from None
    if annotation is str:
        if value is None:
            raise RecipeError(f"'{field_path}' must not be empty.")
        if isinstance(value, (dict, list)):
            raise RecipeError(f"'{field_path}' must be a string; got {value!r}.")
        return str(value)
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``, rejecting unknown keys and missing required ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"'{prefix.rstrip('.') or 'recipe'}' must be a mapping of keys to values; got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            raise unknown_key_error(str(key), prefix, fields)
        kwargs[key] = coerce(value, hints[key], prefix + key)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"Missing required field '{prefix}{name}'.")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except (TypeError, ValueError) as error:
        raise RecipeError(f"Invalid value in '{prefix.rstrip('.') or 'recipe'}': {error}") from None


def to_dict(obj: Any) -> Any:
    """Plain-data view of a dataclass tree (tuples become lists), for YAML output."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one ``a.b.c=value`` assignment; the value is parsed as YAML (``3e-5``, ``true``, ``[1, 2]``)."""
    if "=" not in assignment:
        raise RecipeError(f"Override '{assignment}' must look like section.field=value (e.g. training.learning_rate=3e-5).")
    path, raw = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise RecipeError(f"Override '{assignment}' has no field name before '='.")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise RecipeError(f"Override '{assignment}': the value is not valid YAML ({problem}).") from None
    node: Any = tree
    for depth, key in enumerate(keys):
        if isinstance(node, list):  # ``stages.0.data.path``: a list index
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"Override '{assignment}': '{'.'.join(keys[:depth])}' is a list of {len(node)}; "
                                  f"'{key}' is not an index in it (0 to {len(node) - 1}).")
            key = int(key)
        if depth == len(keys) - 1:
            node[key] = value
            return
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, (dict, list)):
            raise RecipeError(f"Override '{assignment}': '{keys[depth]}' is a value, not a section.")
        node = child


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML loading that reads ``3e-5`` as a number: YAML 1.1 (PyYAML) needs a dot, recipes don't."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML (safe: no Python objects)."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
