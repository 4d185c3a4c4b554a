"""Building a config dataclass from a mapping (YAML), checked: unknown keys, types (with the few safe widenings
YAML needs), and the dataclass's own ``check``, each failure one :class:`~ray_sbir.registry.ConfigError` naming
the key. The one validation mechanism of run configs (:mod:`ray_sbir.config`), loss-term and sampler options,
and the serve config."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from ray_sbir.registry import ConfigError

__all__ = ["build_typed"]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (with the few safe widenings YAML needs)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # `X | None`: X's own error says best what is wrong
            return _coerce(value, options[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {', '.join(repr(f'{where}.{k}' if where else k) for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, values[name] or {}, key)
        else:
            kwargs[name] = _coerce(values[name], tp, key)
    obj = cls(**kwargs)
    if callable(getattr(obj, "check", None)):  # cross-field checks; options owned by registries (terms, tasks)
        obj.check(where or "config")
    return obj


def build_typed(cls: type, values: dict, where: str = "") -> Any:
    """Build any config dataclass from a mapping with the same checks as run configs (unknown keys, types,
    ``check``): the one validation mechanism, used by loss-term options and the serve config too."""
    return _build(cls, values, where)
