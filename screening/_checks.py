"""Argument checks shared by the screening rules: enum conversion at the edge, numbers, booleans.

Every error names the argument and shows the offending value: ``TypeError`` for a wrong type,
``ValueError`` for a wrong value.
"""

from __future__ import annotations

import math
from enum import StrEnum
from numbers import Real
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


def to_enum(enum_type: type[E], value: E | str, argument: str) -> E:
    """``value`` as a member of ``enum_type``; strings are converted once, here, at the edge of the API."""
    if isinstance(value, enum_type):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a {enum_type.__name__} or a str, got {type(value).__name__} {value!r}")
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_type)
        raise ValueError(f"{argument} must be one of {allowed}, got {value!r}") from None


def real(value: object, argument: str) -> float:
    """``value`` as a finite float; ``bool`` is refused although it is an ``int``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{argument} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{argument} must be finite, got {value!r}")
    return number


def positive(value: object, argument: str) -> float:
    """``value`` as a finite float greater than zero."""
    number = real(value, argument)
    if number <= 0:
        raise ValueError(f"{argument} must be > 0, got {value!r}")
    return number


def boolean(value: object, argument: str) -> bool:
    """``value`` itself, when it is a ``bool`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be a bool, got {type(value).__name__} {value!r}")
    return value
