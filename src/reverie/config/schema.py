"""What a config class accepts, read from its annotations; how a value or key that does not fit is reported.

The field and section helpers (``Optional[...]`` stripped, init-only fields,
the dataclass behind a section), the short type names that error messages
use, the dotted keys a config class has, and the "did you mean" suggestion
for an unknown key. :class:`ConfigError` is the base of every error
:mod:`reverie.config` raises.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["ConfigError", "flat_keys"]


class ConfigError(ValueError):
    """A config value, key, override or file that does not fit the config class."""


# --------------------------------------------------------------------------
# Type introspection helpers
# --------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (works with ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def _init_fields(cls_or_obj: DataclassInstance | type[DataclassInstance]) -> list[dataclasses.Field]:
    # Fields with init=False are derived values: they are neither set by the
    # user nor stored, since the constructor recomputes them.
    return [f for f in dataclasses.fields(cls_or_obj) if f.init]


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is Union or origin is types.UnionType


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> (X, True); anything else -> (tp, False)."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True
    return tp, False


def _section_type(tp: Any) -> type | None:
    """The dataclass type behind a field annotation (``X`` or ``Optional[X]``), else None."""
    inner, _ = _strip_optional(tp)
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        return inner
    return None


def _origin_args(tp: Any) -> tuple[Any, tuple]:
    """``get_origin``/``get_args``, treating bare ``tuple``/``list``/``dict`` as unparameterised."""
    if tp in (tuple, list, dict):
        return tp, ()
    return typing.get_origin(tp), typing.get_args(tp)


def _type_name(tp: Any) -> str:
    """A short human-readable name for an annotation, for error messages."""
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple of {_type_name(args[0])}"
        if args == ((),) or not args:
            return "tuple"
        return "tuple (" + ", ".join(_type_name(a) for a in args) + ")"
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"section {tp.__name__}"
    return getattr(tp, "__name__", str(tp))


def _wrong(key: str, tp: Any, value: Any) -> ConfigError:
    if typing.get_origin(tp) is Literal:
        choices = ", ".join(repr(a) for a in typing.get_args(tp))
        return ConfigError(f"config key '{key}' must be one of {choices}; got {value!r}")
    return ConfigError(
        f"config key '{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )


# --------------------------------------------------------------------------
# Keys and suggestions
# --------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _keys_of_type(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = _hints(cls)
    for f in _init_fields(cls):
        section = _section_type(hints[f.name])
        if section is not None:
            out.extend(_keys_of_type(section, _join(prefix, f.name)))
        else:
            out.append(_join(prefix, f.name))
    return out


def flat_keys(cfg: object) -> list[str]:
    """Every settable dotted key of a config (instance or class), in field order, for help output.

    Sections typed ``Optional[Section]`` are listed even when currently None.
    """
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"flat_keys expects a config dataclass, got {type(cfg).__name__}")
    if isinstance(cfg, type):
        return _keys_of_type(cfg)
    out: list[str] = []
    hints = _hints(type(cfg))
    for f in _init_fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.extend(_join(f.name, k) for k in flat_keys(value))
        elif (section := _section_type(hints[f.name])) is not None:
            out.extend(_join(f.name, k) for k in _keys_of_type(section))
        else:
            out.append(f.name)
    return out


def _closest(word: str, candidates: list[str], cutoff: float) -> list[str]:
    """Candidates similar to ``word``, best first, keeping only those near the best score."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates), reverse=True
    )
    scored = [(s, c) for s, c in scored if s >= cutoff]
    return [c for s, c in scored[:3] if s >= scored[0][0] - 0.05] if scored else []


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    section, _, leaf = key.rpartition(".")
    # Most typos are in the leaf name: compare it with its siblings first, then
    # the whole dotted key, then the leaf against every section ('trian.lr').
    siblings = [k for k in valid if k.rpartition(".")[0] == section]
    close = [_join(section, c) for c in _closest(leaf, [k.rpartition(".")[2] for k in siblings], 0.6)]
    if not close:
        close = _closest(key, valid, 0.6)
    if not close:
        by_leaf: dict[str, str] = {}
        for k in valid:
            by_leaf.setdefault(k.rpartition(".")[2], k)
        close = [by_leaf[c] for c in _closest(leaf, list(by_leaf), 0.75)]
    if close:
        hint = " or ".join(f"'{c}'" for c in close)
        return ConfigError(f"unknown config key '{key}'; did you mean {hint}?")
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return ConfigError(f"unknown config key '{key}'; valid keys are: {shown}")
