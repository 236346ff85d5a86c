"""Reading config values: a YAML value checked against its field's type, one-line YAML error
messages, and `section.key=value` overrides. Knows nothing of the config's sections."""

from __future__ import annotations

from typing import Any

import yaml

from ssenet.choices import CHOICE_KEYS
from ssenet.errors import SsenetError


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check and convert one value against its field's type annotation."""
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ())
    if value is None:
        if type(None) in args:
            return None
        raise SsenetError(f"config key {key}: a value is required")
    if origin is tuple or annotation is tuple:
        if not isinstance(value, list | tuple):
            raise SsenetError(f"config key {key}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise SsenetError(f"config key {key}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, item_type, key) for v in value)
    if type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return coerce(value, inner, key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise SsenetError(f"config key {key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SsenetError(f"config key {key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SsenetError(f"config key {key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is False and "off" in CHOICE_KEYS.get(key, ()):
            return "off"  # YAML 1.1 reads an unquoted off (run.amp=off) as false
        if not isinstance(value, str):
            raise SsenetError(f"config key {key}: expected a string, got {value!r}")
        return value
    return value


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line from a YAML error, e.g. "line 2, column 1: found character '\\t' that cannot
    start any token" (PyYAML's own message spans several lines and quotes the source)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip() or type(err).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """Turn `section.key=value` strings into a nested mapping; values are parsed as YAML."""
    nested: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not section or not key:
            raise SsenetError(f"override {item!r}: expected section.key=value, e.g. cam.eta=0.5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise SsenetError(
                f"override {item!r}: cannot parse the value ({yaml_problem(err)})"
            ) from err
        nested.setdefault(section, {})[key] = value
    return nested
