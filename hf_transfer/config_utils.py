"""Build dataclasses from plain dicts (YAML, ``--set``) with errors that name the field.

``dacite``-like libraries exist, but none gives "did you mean" hints for misspelt keys and full
dotted field paths in every message, which is what recipe users need most.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Iterable

import yaml

from .errors import RecipeError


MAX_QUOTED = 200
"""Characters of a user's value quoted in an error message; a pasted file or an alias bomb stays readable."""


def short(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that one error line stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def boolean_for_string(field_path: str, value: Any, example: str = "no", choices: Iterable[str] = ()) -> RecipeError:
    """YAML 1.1 reads unquoted no/yes/on/off as booleans: say so where a string was expected."""
    listing = f" Choices: {', '.join(choices)}." if choices else ""
    return RecipeError(f"'{field_path}' is {value}, not a string: YAML reads unquoted no/yes/on/off/true/false as "
                       f"booleans; quote the value, e.g. {field_path.rpartition('.')[2]}: \"{example}\".{listing}")


def closest(name: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_error(key: str, where: str, valid: Iterable[str], cls: type | None = None) -> RecipeError:
    """One line naming the key, the closest valid one, or, for a key that was renamed (a section's ``RENAMED``:
    old name -> what to write now), the new spelling."""
    renamed = getattr(cls, "RENAMED", {}) if cls is not None else {}
    if key in renamed:
        return RecipeError(f"'{where}{key}' was replaced: {renamed[key]}.")
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
        raise RecipeError(errors[0] if len(errors) == 1
                          else f"'{field_path}': {short(value)} fits none of {annotation}.")
    if origin is typing.Literal:
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args):
            raise boolean_for_string(field_path, value, str(args[0]), map(str, args))
        if value not in args:
            raise RecipeError(f"'{field_path}' must be one of {', '.join(map(repr, args))}; got {short(value)}.")
        return value
    if origin is list or origin is tuple:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"'{field_path}' must be a list; got {short(value)}.")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{field_path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"'{field_path}' must be a mapping; got {short(value)}.")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):  # ``Recipe.replace`` with a section built in code
            return value
        return from_dict(annotation, value, field_path + ".")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        raise RecipeError(f"'{field_path}' must be true or false; got {short(value)}.")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise RecipeError(f"'{field_path}' must be an integer; got {short(value)}.")
        try:
            number = float(value)
        except ValueError:
            raise RecipeError(f"'{field_path}' must be an integer; got {short(value)}.") from None
        if not number.is_integer():
            raise RecipeError(f"'{field_path}' must be an integer; got {short(value)}.")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise RecipeError(f"'{field_path}' must be a number; got {short(value)}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"'{field_path}' must be a number; got {short(value)}.") from None
    if annotation is str:
        if isinstance(value, bool):
            raise boolean_for_string(field_path, value, "yes" if value else "no")
        if value is None:
            raise RecipeError(f"'{field_path}' must not be empty.")
        if isinstance(value, (dict, list)):
            raise RecipeError(f"'{field_path}' must be a string; got {short(value)}.")
        return str(value)
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``, rejecting unknown keys and missing required ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"'{prefix.rstrip('.') or 'recipe'}' must be a mapping of keys to values; got {short(data)}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            raise unknown_key_error(str(key), prefix, fields, cls)
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


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (``["a", "b", "c"]``, value); the value is parsed as YAML (``3e-5``, ``true``, ``[1, 2]``)."""
    if "=" not in assignment:
        raise RecipeError(f"Override {short(assignment)} must look like section.field=value "
                          "(e.g. training.learning_rate=3e-5).")
    path, raw = assignment.split("=", 1)
    keys = override_keys(path, assignment)
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise RecipeError(f"Override {short(assignment)}: the value is not valid YAML "
                          f"({yaml_problem(error)}).") from None
    return keys, value


def override_keys(path: str, assignment: str) -> list[str]:
    """The field names of a dotted path; ``assignment`` is what the user wrote, for the error."""
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise RecipeError(f"Override {short(assignment)} has no field name before '='.")
    return keys


def set_path(tree: dict, keys: list[str], value: Any, assignment: str) -> None:
    """Set ``tree[k0][k1]...`` to ``value``, creating missing mappings; digits index lists (``stages.0``)."""
    node: Any = tree
    for depth, key in enumerate(keys):
        if isinstance(node, list):  # ``stages.0.data.path``: a list index
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"Override {short(assignment)}: '{'.'.join(keys[:depth])}' is a list of {len(node)}; "
                                  f"'{key}' is not an index in it (0 to {len(node) - 1}).")
            key = int(key)
        if depth == len(keys) - 1:
            node[key] = value
            return
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, (dict, list)):
            raise RecipeError(f"Override {short(assignment)}: '{keys[depth]}' is a value, not a section.")
        node = child


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one ``a.b.c=value`` assignment (command-line text) to a plain recipe mapping."""
    keys, value = parse_override(assignment)
    set_path(tree, keys, value, assignment)


Change = tuple[list[str], Any]
"""A dotted field path (split) and its new value."""


def patched(value: Any, changes: list[Change], where: str) -> Any:
    """A copy of plain data ``value`` with each change applied in order (an empty path replaces it whole)."""
    root = {where: copy.deepcopy(value)}
    for keys, new in changes:
        set_path(root, [where, *keys], new, f"{'.'.join([where, *keys])}={short(new)}")
    return root[where]


def replace_fields(obj: Any, changes: list[Change], prefix: str = "") -> Any:
    """A copy of dataclass ``obj`` with dotted-path ``changes``, coerced and validated as ``from_dict`` does."""
    fields = {f.name for f in dataclasses.fields(obj) if f.init}
    hints = typing.get_type_hints(type(obj))
    grouped: dict[str, list[Change]] = {}
    for keys, value in changes:
        if keys[0] not in fields:
            raise unknown_key_error(keys[0], prefix, fields, type(obj))
        grouped.setdefault(keys[0], []).append((keys[1:], value))
    values = {name: _field_value(getattr(obj, name), items, hints[name], prefix + name)
              for name, items in grouped.items()}
    try:
        return dataclasses.replace(obj, **values)
    except RecipeError:
        raise
    except (TypeError, ValueError) as error:
        raise RecipeError(f"Invalid value in '{prefix.rstrip('.') or 'recipe'}': {error}") from None


def _field_value(current: Any, changes: list[Change], annotation: Any, field_path: str) -> Any:
    """The new value of one field: a nested dataclass is replaced field by field, anything else is patched."""
    if dataclasses.is_dataclass(current) and all(keys for keys, _ in changes):
        return replace_fields(current, changes, field_path + ".")
    plain = to_dict(current) if dataclasses.is_dataclass(current) else current
    return coerce(patched(plain, changes, field_path), annotation, field_path)


MAX_EXPANDED_VALUES = 100_000
"""Values a recipe may hold once YAML aliases (``*name``) are expanded; a "billion laughs" file holds ~10^9."""


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML loading that reads ``3e-5`` as a number (YAML 1.1 (PyYAML) needs a dot, recipes don't),
    refuses duplicate keys (PyYAML keeps the last one silently) and aliases that expand without bound."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # ``<<: *base`` keys may be overridden; that is what merging is for
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {short(key)} appears twice, on lines {seen[key].start_mark.line + 1} "
                        f"and {key_node.start_mark.line + 1} (the second would silently replace the first): "
                        "merge them into one")
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` stands for once aliases are expanded (shared nodes counted at every use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it (a recursive "
                                          "structure); write the values out", node.start_mark)
    open_nodes.add(id(node))
    children = [] if isinstance(node, yaml.ScalarNode) else (
        [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value)
    total = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    if total > MAX_EXPANDED_VALUES:
        raise yaml.composer.ComposerError(None, None, f"aliases (*name) expand to more than {MAX_EXPANDED_VALUES:,} "
                                          "values; write the values out instead of nesting aliases", node.start_mark)
    open_nodes.discard(id(node))
    sizes[id(node)] = total
    return total


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML error: the problem and where (PyYAML's own message spans several lines)."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{error.problem or error.context}{where}"
    return " ".join(str(error).split())


def load_yaml(text: str) -> Any:
    """Parse recipe YAML (safe: no Python objects)."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
