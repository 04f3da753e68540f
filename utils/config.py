"""Typed configuration from YAML: nested mappings applied onto dataclasses, each value converted to
its field's type or refused with one error naming the file and the key. The run's config (which
dataclasses, which checks) is :mod:`scene.config`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from utils.errors import InputFileError, MissingFileError

__all__ = ["merge_into", "load_yaml", "parse_assignment", "convert", "check_range", "check_positive", "check_choice"]


def merge_into(target: Any, updates: dict, source: str, fixed_length: Iterable[str] = (), prefix: str = "") -> None:
    """Apply nested ``updates`` onto dataclass ``target`` in place: unknown keys are errors naming
    ``source``; each value is converted to the type of the field's current value (:func:`_coerce`);
    the dotted keys in ``fixed_length`` are lists whose length must not change."""
    if not isinstance(updates, dict):
        raise InputFileError(f"{source}: '{prefix or 'top level'}' must be a mapping, got {type(updates).__name__}")
    names = {f.name: f for f in dataclasses.fields(target)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise InputFileError(
                f"{source}: unknown config key '{path}'. Valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(target, key)
        registry = names[key].metadata.get("registry")
        if registry is not None:
            current = _select_component(target, key, current, value, registry, source, path)
            value = {k: v for k, v in value.items() if k != "type"} if isinstance(value, dict) else {}
            for name in [k for k in value if k in registry and isinstance(value[k], dict)]:
                # ``<type>: {...}``: settings for that type, applied when it is the slot's type here
                # (a schedule file composed after any method); checked against it either way.
                settings = value.pop(name)
                merge_into(current if name == current.type else registry.default_config(name), settings, source,
                           fixed_length, prefix=f"{path}.{name}.")
        if dataclasses.is_dataclass(current):
            merge_into(current, value, source, fixed_length, prefix=f"{path}.")
        else:
            setattr(target, key, _coerce(current, value, source, path, tuple(fixed_length)))


def _select_component(target: Any, key: str, current: Any, value: Any, registry: Any, source: str, path: str) -> Any:
    """A component slot (a field whose metadata names a registry, e.g. ``model.color``): a mapping
    whose ``type`` differs from the current one, or a bare type name, replaces the slot's config
    with that type's defaults (``registry.default_config``); other keys then apply to it, except
    keys that name a registered type (``feature_lines: {...}``): settings that apply only when that
    type is the slot's at this point of the composition (and are checked against it regardless)."""
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise InputFileError(f"{source}: config key '{path}' must be a mapping with a `type` (one of "
                             f"{', '.join(registry.names())}) or a type name, got {value!r}")
    chosen = value.get("type", current.type)
    if not isinstance(chosen, str):
        raise InputFileError(f"{source}: config key '{path}.type' must be a type name, got {chosen!r}")
    if chosen != current.type:
        current = registry.default_config(chosen, f"{source}, config key '{path}.type'")
        setattr(target, key, current)
    return current


def convert(current: Any, value: Any, source: str, path: str) -> Any:
    """``value`` converted to the type of ``current`` (as a config value of that field would be),
    or one error naming ``source`` and ``path``."""
    return _coerce(current, value, source, path)


def _coerce(current: Any, value: Any, source: str, path: str, fixed_length: tuple = ()) -> Any:
    """Check/convert ``value`` to the type of the default ``current`` (ints accepted for floats)."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else _fail(source, path, value, "an integer")
            except ValueError:
                pass
    elif isinstance(current, float):
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                return _fail(source, path, value, "a finite number")
            return number
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
    elif isinstance(current, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v.strip() for v in value.split(",")]
        if isinstance(value, list):
            return _coerce_list(current, value, source, path, fixed_length)
    else:
        return value
    return _fail(source, path, value, type(current).__name__)


def _coerce_list(current: list, value: list, source: str, path: str, fixed_length: tuple = ()) -> list:
    """Each element converted to the type of the default's elements; fixed-length lists checked."""
    if path in fixed_length and len(value) != len(current):
        return _fail(source, path, value, f"a list of {len(current)} values")
    if not current:
        return value
    return [_coerce(current[0], v, source, f"{path}[{i}]") for i, v in enumerate(value)]


def _fail(source: str, path: str, value: Any, expected: str):
    raise InputFileError(f"{source}: config key '{path}' must be {expected}, got {value!r}")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path} (see configs/ for the shipped configs)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputFileError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_assignment(text: str) -> dict:
    """``"optim.grid_lr=1e-3"`` -> ``{"optim": {"grid_lr": "1e-3"}}`` (typed later by _coerce)."""
    if "=" not in text:
        raise InputFileError(f"--set expects section.key=value, got {text!r}")
    key, value = text.split("=", 1)
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value.strip()
    return nested


def check_range(key: str, value, lo, hi=None) -> None:
    """One error naming ``key`` unless lo <= value (<= hi)."""
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise InputFileError(f"config key '{key}' must be {bound}, got {value!r}")


def check_positive(key: str, value) -> None:
    """One error naming ``key`` (a learning rate) unless value > 0."""
    if not value > 0:
        raise InputFileError(f"config key '{key}' (a learning rate) must be > 0, got {value!r}")


def check_choice(key: str, value, allowed) -> None:
    """One error naming ``key`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise InputFileError(f"config key '{key}' must be one of {', '.join(map(str, allowed))}, got {value!r}")
