"""Enumerated values at the edge of an API: accept the Enum or its string, convert once, name the argument."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


def to_enum(enum_type: type[E], value: E | str, argument: str) -> E:
    """``value`` as a member of ``enum_type``; a TypeError or ValueError names ``argument`` and the value."""
    if isinstance(value, enum_type):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a {enum_type.__name__} or a str, got {type(value).__name__} {value!r}")
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_type)
        raise ValueError(f"{argument} must be one of {allowed}, got {value!r}") from None
