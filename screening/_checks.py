"""Argument checks shared by the screening rules: enum conversion at the edge, numbers, booleans.

Every error names the argument and shows the offending value: ``TypeError`` for a wrong type,
``ValueError`` for a wrong value.
"""

from __future__ import annotations

import math
from numbers import Real

from nightscan.enums import to_enum

__all__ = ["real", "to_enum"]


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
