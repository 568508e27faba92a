"""Value ranges declared in a numeric field's annotation, and the check that enforces them.

``steps: PositiveInt`` or ``holdout: Annotated[float, between(0, 1)]`` declares
a :class:`Range`; a class whose ``__post_init__`` calls :func:`check_ranges`
refuses a value outside it with :class:`OutOfRangeError`, which the override
and file readers re-raise under the dotted key the user typed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from typing import TYPE_CHECKING, Annotated, Callable, TypeVar

from reverie.config.schema import ConfigError, _init_fields, _join, _strip_optional

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")

__all__ = [
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OutOfRangeError",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "above",
    "at_least",
    "between",
    "built_checked",
    "check_ranges",
]


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

    def admits(self, value: object) -> bool:
        """Whether ``value`` is a finite real number (not a bool) inside the bounds."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_strict else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_strict else value <= self.high)

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

    def __init__(self, owner: str, name: str, value: object, allowed: Range, key: str | None = None) -> None:
        self.owner, self.name, self.value, self.allowed, self.key = owner, name, value, allowed, key
        subject = f"config key '{key}'" if key is not None else f"{owner}.{name}"
        finite = "a finite number " if isinstance(value, float) and not math.isfinite(value) else ""
        super().__init__(f"{subject} must be {finite}{allowed.describe()}, got {value!r}")

    def under(self, section: str) -> OutOfRangeError:
        """The same error naming the field by its dotted key inside ``section`` ('' for the top level)."""
        return OutOfRangeError(self.owner, self.name, self.value, self.allowed, _join(section, self.name))


def built_checked(make: Callable[[], T], section: str, invalid: Callable[[Exception], str]) -> T:
    """``make()`` (a config class built or replaced), with its errors as ConfigErrors: a range error names
    the field's dotted key inside ``section``, another ``__post_init__`` refusal is ``invalid(error)``."""
    try:
        return make()
    except OutOfRangeError as e:
        raise e.under(section) from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a __post_init__ check of the config class
        raise ConfigError(invalid(e)) from e


def check_ranges(cfg: DataclassInstance) -> None:
    """Raise :class:`OutOfRangeError` for the first field of ``cfg`` outside its declared :class:`Range`.

    Call it from the config class's ``__post_init__``; fields without a Range are not looked at.
    """
    for name, allowed in _declared_ranges(type(cfg)).items():
        value = getattr(cfg, name)
        if value is not None and not allowed.admits(value):
            raise OutOfRangeError(type(cfg).__name__, name, value, allowed)


@functools.cache
def _declared_ranges(cls: type[DataclassInstance]) -> dict[str, Range]:
    """Field name -> Range, read once per class from ``Annotated[...]`` (also inside ``Optional``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    ranges: dict[str, Range] = {}
    for f in _init_fields(cls):
        inner, _ = _strip_optional(hints[f.name])
        if typing.get_origin(inner) is Annotated:
            found = [m for m in inner.__metadata__ if isinstance(m, Range)]
            if found:
                ranges[f.name] = found[0]
    return ranges
