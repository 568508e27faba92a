"""Typed configuration machinery over nested dataclasses.

reverie's configs are plain dataclasses (frozen or not) whose fields are
annotated with ``int``, ``float``, ``bool``, ``str``, ``pathlib.Path``,
``tuple[int, ...]``, ``list[...]``, ``dict[str, ...]``, ``Optional[...]``,
``Literal[...]`` or another config dataclass (a *section*). This module
turns them into plain dictionaries and YAML files and back, and applies
command-line overrides such as ``train.batch_size=32`` or
``model.hidden=(256,256)``, checking every value against the field's
annotation so a typo or a wrong type fails with one sentence that names the
key and the fix, before any training starts.

Numeric fields may declare the range they accept in their annotation
(``steps: PositiveInt``, ``holdout: Annotated[float, between(0, 1)]``); a
class whose ``__post_init__`` calls :func:`check_ranges` then refuses a value
outside it in one sentence, which overrides and files report under the dotted
key (``config key 'run.steps' must be at least 1, got -5``).

Everything here is a function of the config *class* (read through
``typing.get_type_hints``); nothing needs to be registered.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import os
import pathlib
import types
import typing
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml

from reverie.io import atomic_write_text

__all__ = [
    "ConfigError",
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OutOfRangeError",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "above",
    "apply_overrides",
    "at_least",
    "between",
    "check_ranges",
    "flat_keys",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]

T = TypeVar("T")

_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


class ConfigError(ValueError):
    """A config value, key, override or file that does not fit the config class."""


# --------------------------------------------------------------------------
# Value ranges, declared in a field's annotation
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a field accepts; declare it as ``steps: Annotated[int, at_least(1)]``.

    A bound of None leaves that side open; a strict bound excludes itself.
    NaN and infinity are never in a range, and None is always accepted (an
    ``Optional`` field left unset).
    """

    low: float | None = None
    high: float | None = None
    low_strict: bool = False
    high_strict: bool = False

    def admits(self, value: Any) -> bool:
        """Whether ``value`` is a finite real number (not a bool) inside the bounds."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_strict else value < self.low):
            return False
        return self.high is None or not (value >= self.high if self.high_strict else value > self.high)

    def describe(self) -> str:
        """The range in words: 'at least 1', 'above 0', 'between 0 and 1', 'in (0, 1)'."""
        low, high = _number_text(self.low), _number_text(self.high)
        if self.high is None:
            return f"above {low}" if self.low_strict else f"at least {low}"
        if self.low is None:
            return f"below {high}" if self.high_strict else f"at most {high}"
        if not (self.low_strict or self.high_strict):
            return f"between {low} and {high}"
        return f"in {'(' if self.low_strict else '['}{low}, {high}{')' if self.high_strict else ']'}"


def _number_text(bound: float | None) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def at_least(low: float) -> Range:
    """Values ``>= low``."""
    return Range(low=low)


def above(low: float) -> Range:
    """Values ``> low``."""
    return Range(low=low, low_strict=True)


def between(low: float, high: float, *, low_strict: bool = False, high_strict: bool = False) -> Range:
    """Values from ``low`` to ``high``, both included unless made strict."""
    return Range(low=low, high=high, low_strict=low_strict, high_strict=high_strict)


#: Annotations for the common ranges (wrap in ``Optional[...]`` for fields that may be None).
PositiveInt = Annotated[int, at_least(1)]
NonNegativeInt = Annotated[int, at_least(0)]
PositiveFloat = Annotated[float, above(0.0)]
NonNegativeFloat = Annotated[float, at_least(0.0)]
Fraction = Annotated[float, between(0.0, 1.0)]


class OutOfRangeError(ConfigError):
    """A config value outside the :class:`Range` its field declares.

    Raised by a config class's ``__post_init__`` (through :func:`check_ranges`)
    naming ``Class.field``; the override and file readers re-raise it with the
    dotted key the user typed, e.g. ``run.steps``.
    """

    def __init__(self, owner: str, name: str, value: Any, allowed: Range, key: str | None = None):
        self.owner, self.name, self.value, self.allowed, self.key = owner, name, value, allowed, key
        subject = f"config key '{key}'" if key is not None else f"{owner}.{name}"
        finite = "a finite number " if isinstance(value, float) and not math.isfinite(value) else ""
        super().__init__(f"{subject} must be {finite}{allowed.describe()}, got {value!r}")

    def under(self, section: str) -> OutOfRangeError:
        """The same error naming the field by its dotted key inside ``section`` ('' for the top level)."""
        return OutOfRangeError(self.owner, self.name, self.value, self.allowed, _join(section, self.name))


def check_ranges(cfg: Any) -> None:
    """Raise :class:`OutOfRangeError` for the first field of ``cfg`` outside its declared :class:`Range`.

    Call it from the config class's ``__post_init__``; fields without a Range are not looked at.
    """
    for name, allowed in _declared_ranges(type(cfg)).items():
        value = getattr(cfg, name)
        if value is not None and not allowed.admits(value):
            raise OutOfRangeError(type(cfg).__name__, name, value, allowed)


@functools.cache
def _declared_ranges(cls: type) -> dict[str, Range]:
    """Field name -> Range, read once per class from ``Annotated[...]`` (also inside ``Optional``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    ranges = {}
    for f in _init_fields(cls):
        inner, _ = _strip_optional(hints[f.name])
        if typing.get_origin(inner) is Annotated:
            found = [m for m in inner.__metadata__ if isinstance(m, Range)]
            if found:
                ranges[f.name] = found[0]
    return ranges


# --------------------------------------------------------------------------
# Type introspection helpers
# --------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (works with ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def _init_fields(cls_or_obj: Any) -> list[dataclasses.Field]:
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
    try:
        return cls(**kwargs)
    except OutOfRangeError as e:
        raise e.under(where) from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a __post_init__ check of the config class
        raise ConfigError(f"invalid config {where or cls.__name__}: {e}") from e


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


def flat_keys(cfg: Any) -> list[str]:
    """Every settable dotted key of a config (instance or class), in field order, for help output.

    Sections typed ``Optional[Section]`` are listed even when currently None.
    """
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"flat_keys expects a config dataclass, got {type(cfg).__name__}")
    if isinstance(cfg, type):
        return _keys_of_type(cfg)
    out = []
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


# --------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------


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
    try:
        return dataclasses.replace(cfg, **{name: value})
    except OutOfRangeError as e:
        raise e.under(prefix) from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a __post_init__ check of the config class
        raise ConfigError(f"override {key}={text} is invalid: {e}") from e


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
