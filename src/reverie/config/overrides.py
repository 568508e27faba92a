"""Command-line overrides: ``key=value`` strings parsed by the field's annotation and applied to a config.

``train.batch_size=32``, ``model.hidden=(256,256)``, ``flag=true``,
``name=none``; an unknown key gets a suggestion, a value of the wrong type one
sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
from typing import Any, Literal, TypeVar

import yaml

from reverie.config.convert import _coerce
from reverie.config.ranges import built_checked
from reverie.config.schema import (
    ConfigError,
    _hints,
    _init_fields,
    _is_union,
    _join,
    _origin_args,
    _section_type,
    _strip_optional,
    _type_name,
    _unknown_key,
    _wrong,
    flat_keys,
)

__all__ = ["apply_overrides"]

T = TypeVar("T")

_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """A new config with ``key=value`` overrides applied in order (later ones win).

    Values are parsed by the field's annotation: ``train.lr=3e-4``,
    ``model.hidden=(256,256)`` or ``model.hidden=256,256`` (``()`` for an
    empty tuple), ``flag=true``/``false``, ``name=none`` for Optional fields,
    Literal fields by their choice. Setting a key inside an ``Optional``
    section that is currently None creates that section from its defaults.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ConfigError(f"apply_overrides expects a config dataclass instance, got {type(cfg).__name__}")
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.batch_size=32)")
        cfg = _set(cfg, key.split("."), value.strip(), "", cfg)
    return cfg


def _set(cfg: Any, parts: list[str], text: str, prefix: str, root: Any) -> Any:
    name, rest = parts[0], parts[1:]
    key = _join(prefix, name)
    fields = {f.name for f in _init_fields(cfg)}
    if name not in fields:
        full = _join(prefix, ".".join(parts))
        raise _unknown_key(full, flat_keys(root))
    tp = _hints(type(cfg))[name]
    current = getattr(cfg, name)
    if not rest:
        if _section_type(tp) is not None and not (_strip_optional(tp)[1] and text.lower() in _NONE_WORDS):
            raise ConfigError(
                f"config key '{key}' is a section, not a value; set its fields, e.g. {key}.<field>=..."
            )
        value = _parse(text, tp, key)
    else:
        section = _section_type(tp)
        if section is None:
            raise ConfigError(
                f"config key '{key}' is a value ({_type_name(tp)}), not a section; "
                f"it has no key '{'.'.join(rest)}'"
            )
        if current is None:
            try:
                current = section()
            except TypeError as e:
                raise ConfigError(
                    f"config section '{key}' is None and has required fields; set it in the config file first"
                ) from e
        value = _set(current, rest, text, key, root)
    return built_checked(lambda: dataclasses.replace(cfg, **{name: value}), prefix,
                         lambda e: f"override {key}={text} is invalid: {e}")


def _parse(text: str, tp: Any, key: str) -> Any:
    """Parse one override string by annotation ``tp``."""
    if tp is Any:
        return yaml.safe_load(text)
    origin, args = _origin_args(tp)
    if _is_union(tp):
        if type(None) in args and text.lower() in _NONE_WORDS:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(text, arg, key)
            except ConfigError:
                continue
        raise _wrong(key, tp, text)
    if origin is Literal:
        word = _unquote(text)
        for choice in args:
            if str(choice) == word or (isinstance(choice, bool) and word.lower() == str(choice).lower()):
                return choice
        close = difflib.get_close_matches(word, [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"config key '{key}' must be one of {', '.join(repr(a) for a in args)}; got {word!r}{hint}"
        )
    if tp is bool:
        low = text.lower()
        if low in _TRUE_WORDS:
            return True
        if low in _FALSE_WORDS:
            return False
        raise ConfigError(f"config key '{key}' expects true or false, got {text!r}")
    if tp is int:
        try:
            return int(text, 0) if text.lower().startswith(("0x", "0o", "0b")) else int(text)
        except ValueError:
            pass
        try:  # allow 1e6 for counts
            as_float = float(text)
        except ValueError:
            as_float = None
        if as_float is not None and as_float.is_integer():
            return int(as_float)
        raise ConfigError(f"config key '{key}' expects an integer, got {text!r}")
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects a number, got {text!r}") from None
    if tp is str:
        return _unquote(text)
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        return tp(_unquote(text))
    if origin in (tuple, list):
        items = _split_sequence(text)
        if origin is list:
            elem = args[0] if args else str
            return [_parse(t, elem, f"{key}[{i}]") for i, t in enumerate(items)]
        if not args or args == ((),):
            return tuple(_parse(t, Any, f"{key}[{i}]") for i, t in enumerate(items))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(t, args[0], f"{key}[{i}]") for i, t in enumerate(items))
        if len(items) != len(args):
            raise ConfigError(
                f"config key '{key}' expects {len(args)} comma-separated values ({_type_name(tp)}), "
                f"got {len(items)} in {text!r}"
            )
        return tuple(_parse(t, a, f"{key}[{i}]") for i, (t, a) in enumerate(zip(items, args)))
    if origin is dict:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"config key '{key}' expects a mapping like {{a: 1, b: 2}}, got {text!r}") from None
        return _coerce(data, tp, key)
    # Unknown annotation: read it as YAML and let the coercion check it.
    return _coerce(yaml.safe_load(text), tp, key)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _split_sequence(text: str) -> list[str]:
    """'(256, 256)', '[256,256]', '256,256', '256' or '()' -> list of item strings."""
    body = text.strip()
    if len(body) >= 2 and (body[0], body[-1]) in (("(", ")"), ("[", "]")):
        body = body[1:-1]
    items = [t.strip() for t in body.split(",")]
    if items and items[-1] == "":  # trailing comma: '(256,)'
        items.pop()
    if any(t == "" for t in items):
        raise ConfigError(f"sequence value {text!r} has an empty item; write it like 256,256 or (256,256)")
    return items
