"""Typed configuration machinery over nested dataclasses.

reverie's configs are plain dataclasses (frozen or not) whose fields are
annotated with ``int``, ``float``, ``bool``, ``str``, ``pathlib.Path``,
``tuple[int, ...]``, ``list[...]``, ``dict[str, ...]``, ``Optional[...]``,
``Literal[...]`` or another config dataclass (a *section*). This package
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
``typing.get_type_hints``); nothing needs to be registered. The parts, each
importing only the ones before it:

- ``schema``: :class:`ConfigError`, reading a class's fields, sections and
  dotted keys (:func:`flat_keys`), type names for messages, suggestions for
  an unknown key;
- ``ranges``: :class:`Range`, :func:`at_least`, :func:`above`,
  :func:`between`, ``PositiveInt`` and the other range annotations,
  :class:`OutOfRangeError`, :func:`check_ranges`;
- ``convert``: :func:`to_dict`, :func:`from_dict` (checking every value
  against its annotation), :func:`save_config`, :func:`load_config`;
- ``overrides``: :func:`apply_overrides` (``key=value`` parsed by annotation).
"""

from __future__ import annotations

from reverie.config.convert import from_dict, load_config, save_config, to_dict
from reverie.config.overrides import apply_overrides
from reverie.config.ranges import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    OutOfRangeError,
    PositiveFloat,
    PositiveInt,
    Range,
    above,
    at_least,
    between,
    check_ranges,
)
from reverie.config.schema import ConfigError, flat_keys

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
