"""The vocabulary of the screening rules: nodule types, Lung-RADS categories and one nodule measurement.

Sizes follow Lung-RADS v2022: every length is in mm, rounded to 0.1 mm (half up), and a nodule's size is
its mean diameter, (long axis + short axis) / 2, itself rounded to 0.1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from screening._checks import boolean, positive, to_enum

_TENTH = Decimal("0.1")


class NoduleType(StrEnum):
    """The attenuation of a nodule.

    ``CALCIFIED`` stands for every nodule with a benign pattern (benign calcification or fat):
    Lung-RADS category 1, and not scored by Brock. Strings are accepted in any case, with ``-`` or a
    space for ``_``; ``"non_solid"`` and ``"nonsolid"`` mean ``GROUND_GLASS``.
    """

    SOLID = "solid"
    PART_SOLID = "part_solid"
    GROUND_GLASS = "ground_glass"
    CALCIFIED = "calcified"

    @classmethod
    def _missing_(cls, value: object) -> NoduleType | None:
        if not isinstance(value, str):
            return None
        key = value.strip().lower().replace("-", "_").replace(" ", "_")
        if key in ("non_solid", "nonsolid"):
            return cls.GROUND_GLASS
        for member in cls:
            if member.value == key:
                return member
        return None

    @property
    def label(self) -> str:
        """The name as a report writes it: ``part-solid``, ``ground-glass``."""
        return self.value.replace("_", "-")


class LungRads(StrEnum):
    """A Lung-RADS v2022 category, ordered by suspicion: 1 < 2 < 3 < 4A < 4B < 4X.

    Members compare with ``<``, ``>`` and work with ``max()``; strings such as ``"4a"`` are accepted.
    """

    CAT1 = "1"
    CAT2 = "2"
    CAT3 = "3"
    CAT4A = "4A"
    CAT4B = "4B"
    CAT4X = "4X"

    @classmethod
    def _missing_(cls, value: object) -> LungRads | None:
        if not isinstance(value, str):
            return None
        key = value.strip().upper()
        for member in cls:
            if member.value == key:
                return member
        return None

    @property
    def rank(self) -> int:
        """Position in the order of suspicion, 0 for category 1."""
        return list(LungRads).index(self)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, LungRads):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, LungRads):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, LungRads):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, LungRads):
            return NotImplemented
        return self.rank >= other.rank


def round_mm(value_mm: float) -> float:
    """``value_mm`` rounded to 0.1 mm, half up (5.55 -> 5.6), as Lung-RADS reports sizes."""
    return float(Decimal(repr(float(value_mm))).quantize(_TENTH, rounding=ROUND_HALF_UP))


def mean_diameter_mm(long_axis_mm: float, short_axis_mm: float) -> float:
    """Lung-RADS size: each axis rounded to 0.1 mm, then their mean rounded to 0.1 mm (half up)."""
    total = Decimal(repr(round_mm(long_axis_mm))) + Decimal(repr(round_mm(short_axis_mm)))
    return float((total / 2).quantize(_TENTH, rounding=ROUND_HALF_UP))


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One nodule as measured on one CT: type, size in mm, solid component, spiculation.

    Build it with :meth:`from_axes` (long and short axis) or :meth:`from_mean_diameter`. Every length is
    rounded to 0.1 mm (half up) when the object is built, and checked: lengths > 0, short axis <= long
    axis, the mean matches the axes when both are given, a solid component (its mean diameter, mm) for
    part-solid nodules only and no larger than the nodule's mean diameter.
    """

    nodule_type: NoduleType
    mean_diameter_mm: float
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    solid_component_mm: float | None = None
    spiculated: bool = False

    def __post_init__(self) -> None:
        nodule_type = to_enum(NoduleType, self.nodule_type, "nodule_type")
        mean = round_mm(positive(self.mean_diameter_mm, "mean_diameter_mm"))
        boolean(self.spiculated, "spiculated")
        if (self.long_axis_mm is None) != (self.short_axis_mm is None):
            raise ValueError(
                f"long_axis_mm and short_axis_mm go together, got {self.long_axis_mm!r} and {self.short_axis_mm!r}"
            )
        long_axis = short_axis = None
        if self.long_axis_mm is not None and self.short_axis_mm is not None:
            long_axis = round_mm(positive(self.long_axis_mm, "long_axis_mm"))
            short_axis = round_mm(positive(self.short_axis_mm, "short_axis_mm"))
            if short_axis > long_axis:
                raise ValueError(f"short_axis_mm must be <= long_axis_mm ({long_axis}), got {short_axis}")
            expected = mean_diameter_mm(long_axis, short_axis)
            if mean != expected:
                raise ValueError(f"mean_diameter_mm must be ({long_axis} + {short_axis}) / 2 = {expected}, got {mean}")
        solid = self.solid_component_mm
        if nodule_type is NoduleType.PART_SOLID:
            if solid is None:
                raise ValueError("solid_component_mm is required for a part-solid nodule, got None")
            solid = round_mm(positive(solid, "solid_component_mm"))
            if solid > mean:
                raise ValueError(f"solid_component_mm must be <= the mean diameter {mean} mm, got {solid}")
        elif solid is not None:
            raise ValueError(f"solid_component_mm is for part-solid nodules only ({nodule_type}), got {solid!r}")
        object.__setattr__(self, "nodule_type", nodule_type)
        object.__setattr__(self, "mean_diameter_mm", mean)
        object.__setattr__(self, "long_axis_mm", long_axis)
        object.__setattr__(self, "short_axis_mm", short_axis)
        object.__setattr__(self, "solid_component_mm", solid)

    @classmethod
    def from_axes(
        cls,
        nodule_type: NoduleType | str,
        long_axis_mm: float,
        short_axis_mm: float,
        *,
        solid_component_mm: float | None = None,
        spiculated: bool = False,
    ) -> Measurement:
        """A measurement from its long and short axes (mm); the mean diameter is computed."""
        return cls(
            nodule_type=to_enum(NoduleType, nodule_type, "nodule_type"),
            mean_diameter_mm=mean_diameter_mm(
                positive(long_axis_mm, "long_axis_mm"), positive(short_axis_mm, "short_axis_mm")
            ),
            long_axis_mm=long_axis_mm,
            short_axis_mm=short_axis_mm,
            solid_component_mm=solid_component_mm,
            spiculated=spiculated,
        )

    @classmethod
    def from_mean_diameter(
        cls,
        nodule_type: NoduleType | str,
        mean_diameter_mm: float,
        *,
        solid_component_mm: float | None = None,
        spiculated: bool = False,
    ) -> Measurement:
        """A measurement from a mean diameter already known (mm); the axes stay None."""
        return cls(
            nodule_type=to_enum(NoduleType, nodule_type, "nodule_type"),
            mean_diameter_mm=mean_diameter_mm,
            solid_component_mm=solid_component_mm,
            spiculated=spiculated,
        )
