"""A config dataclass to a plain dict or YAML file and back, checking every key and value on the way in.

:func:`to_dict` and :func:`save_config` write; :func:`from_dict` and
:func:`load_config` read strictly, checking each value against its field's
annotation and naming the dotted key of anything that does not fit.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Literal, TypeVar

import yaml

from reverie.config.ranges import built_checked
from reverie.config.schema import (
    ConfigError,
    _hints,
    _init_fields,
    _is_union,
    _join,
    _keys_of_type,
    _origin_args,
    _type_name,
    _unknown_key,
    _wrong,
)
from reverie.io import atomic_write_text

__all__ = ["from_dict", "load_config", "save_config", "to_dict"]

T = TypeVar("T")


# --------------------------------------------------------------------------
# dict <-> dataclass
# --------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a nested plain dict (tuples as lists, paths as str) for JSON/YAML."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ConfigError(f"to_dict expects a config dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in _init_fields(cfg)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build ``cls`` from a nested dict, checking every key and value.

    Missing keys take the field defaults. An unknown key, a value of the wrong
    type, or a missing key without a default raises :class:`ConfigError`
    naming the dotted key (prefixed by ``where``, e.g. ``"train"``).
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ConfigError(f"from_dict expects a config dataclass type, got {cls!r}")
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        name = f"config section '{where}'" if where else f"config for {cls.__name__}"
        raise ConfigError(f"{name} must be a mapping of keys to values, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in _init_fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown_key(_join(where, str(key)), sorted(_keys_of_type(cls, where)))
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config key '{key}' is required (it has no default); add it")
    return _construct(cls, kwargs, where)


def _construct(cls: type[T], kwargs: dict[str, Any], where: str) -> T:
    return built_checked(lambda: cls(**kwargs), where, lambda e: f"invalid config {where or cls.__name__}: {e}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (as read from YAML/JSON) against annotation ``tp``; convert lists to tuples etc."""
    if tp is Any:
        return value
    origin, args = _origin_args(tp)
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise _wrong(key, tp, value)
    if origin is Literal:
        # Compare type as well as value: True == 1 must not satisfy Literal[1].
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        raise _wrong(key, tp, value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads "1e-4" (no dot) as a string: accept numeric strings here.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _wrong(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(key, tp, value)
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        if isinstance(value, (str, pathlib.PurePath)):
            return tp(value)
        raise _wrong(key, tp, value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _wrong(key, tp, value)
        if origin is list:
            elem = args[0] if args else Any
            return [_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        if not args or args == ((),):
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{key}' expects {len(args)} values ({_type_name(tp)}), got {len(value)}"
            )
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(key, tp, value)
        ktp, vtp = args if args else (Any, Any)
        return {_coerce(k, ktp, key): _coerce(v, vtp, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _wrong(key, tp, value)
    return value  # an annotation this module does not understand: trust the class


# --------------------------------------------------------------------------
# YAML files
# --------------------------------------------------------------------------


def save_config(cfg: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write ``cfg`` as YAML to ``path`` atomically (temp file, fsync, rename). Returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
    atomic_write_text(path, text)
    return path


def load_config(cls: type[T], path: str | os.PathLike, migrate: Any = None) -> T:
    """Read a YAML config written by :func:`save_config` (or by hand) into ``cls``, strictly.

    ``migrate``, if given, maps the loaded dict to the current layout first (e.g. drops retired keys)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if migrate is not None and isinstance(data, dict):
        data = migrate(data)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
