"""Lung-RADS v2022 (ACR) categories for solid, part-solid and ground-glass nodules, and their management.

Source: ACR Lung-RADS v2022 (Christensen et al., CHEST 2024;165(3):738-753); see REFERENCE.md section 1.
Sizes are mean diameters in mm, rounded to 0.1 mm (:class:`~screening.types.Measurement`); intervals
are in days. A size band ``a to < b`` holds every size ``s`` with ``a <= s < b``.

How one nodule is categorised (:func:`nodule_category`), in this order:

1. calcified (or fat-containing) nodule: benign, category 1;
2. baseline exam: the baseline table of its type;
3. follow-up, no prior measurement: a NEW nodule, the "new" table of its type;
4. follow-up, prior measurement:

   - ground glass: < 30 mm -> 2 (baseline, new or growing alike); >= 30 mm stable or slowly growing -> 2;
     >= 30 mm and growing (see below) -> 3, treated as not "stable or slowly growing" (a nightscan choice:
     v2022 names no category for it);
   - solid, growing: the "growing" table; part-solid with a new solid component (prior ground glass) or a
     growing solid component: the "new or growing solid component" table;
   - otherwise, when the nodule crossed into a larger size band of the baseline table: its size band;
   - otherwise (stable or decreased), stepping down: a category 3 nodule at a follow-up >= 150 days later
     (its 6-month CT) -> 2; a category 4A nodule at a follow-up >= 60 days later (its 3-month CT) -> 3;
   - otherwise the prior category stands, or, with no prior category given, the size band.

5. 4X: a nodule of category 3, 4A or 4B that is spiculated becomes 4X.

Growth is an increase of more than 1.5 mm (mean diameter; for part-solid nodules, the solid component)
within 12 months, taken as an interval of at most 366 days. Slow growth over several exams (v2022 4B for
solid and part-solid nodules) needs more than one prior and is not judged here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from screening._checks import boolean, positive, to_enum
from screening.types import LungRads, Measurement, NoduleType, round_mm

C1, C2, C3, C4A, C4B, C4X = LungRads

Bands = tuple[tuple[float, LungRads], ...]
"""A size table: (lower bound in mm, category) rows in increasing order; the first lower bound is 0."""

SOLID_BASELINE: Bands = ((0.0, C2), (6.0, C3), (8.0, C4A), (15.0, C4B))
SOLID_NEW: Bands = ((0.0, C2), (4.0, C3), (6.0, C4A), (8.0, C4B))
SOLID_GROWING: Bands = ((0.0, C4A), (8.0, C4B))

PART_SOLID_TOTAL_MM = 6.0
"""Part-solid nodules smaller than this (total mean diameter) are 2 at baseline and 3 when new."""
PART_SOLID_SOLID_COMPONENT: Bands = ((0.0, C3), (6.0, C4A), (8.0, C4B))
"""Baseline part-solid nodule of total >= 6 mm, by its solid component."""
PART_SOLID_NEW_OR_GROWING_SOLID_COMPONENT: Bands = ((0.0, C4A), (4.0, C4B))

GROUND_GLASS_BASELINE_OR_NEW: Bands = ((0.0, C2), (30.0, C3))
GROUND_GLASS_LARGE_MM = 30.0

GROWTH_MM = 1.5
"""Growth is an increase of MORE than this, in mm."""
GROWTH_WINDOW_DAYS = 366.0
"""... within 12 months: an interval of at most this many days."""

STEP_DOWN: dict[LungRads, tuple[LungRads, float]] = {C3: (C2, 150.0), C4A: (C3, 60.0)}
"""Prior category -> (category when stable or decreased, minimum interval in days for its 6- or 3-month CT)."""

SUSPICIOUS_FEATURE_ELIGIBLE = frozenset({C3, C4A, C4B})
"""Categories that become 4X with an extra suspicious feature (spiculation)."""

MANAGEMENT: dict[LungRads, str] = {
    C1: "continue annual screening with LDCT in 12 months",
    C2: "continue annual screening with LDCT in 12 months",
    C3: "LDCT in 6 months",
    C4A: "LDCT in 3 months; PET/CT may be considered if there is a solid nodule or solid component >= 8 mm",
    C4B: "diagnostic chest CT with or without contrast, PET/CT, tissue sampling and/or referral for further "
    "clinical evaluation",
    C4X: "diagnostic chest CT with or without contrast, PET/CT, tissue sampling and/or referral for further "
    "clinical evaluation",
}


@dataclass(frozen=True)
class Assessment:
    """A Lung-RADS category with the reason: the rule applied and the values it was applied to.

    ``before_features``: for a 4X, the category (3, 4A or 4B) the nodule had before its suspicious feature made it
    4X; None otherwise."""

    category: LungRads
    reason: str
    before_features: LungRads | None = None


@dataclass(frozen=True, kw_only=True)
class NoduleHistory:
    """One nodule at the current exam, with what is known of it from the exam before.

    - ``is_baseline_exam``: the patient's first screening CT; ``prior``, ``interval_days`` and
      ``prior_category`` must then be None.
    - at a follow-up exam, ``prior`` None means the nodule is NEW; ``prior_category`` must then be None.
    - at a follow-up exam with a ``prior`` measurement, ``interval_days`` (days between the two CTs, > 0) is
      required; ``prior_category`` (the nodule's category at the prior exam) enables stepping down.

    Prefer the constructors :meth:`at_baseline`, :meth:`new_at_follow_up` and :meth:`at_follow_up`.
    """

    current: Measurement
    prior: Measurement | None = None
    interval_days: float | None = None
    is_baseline_exam: bool = False
    prior_category: LungRads | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.current, Measurement):
            raise TypeError(f"current must be a Measurement, got {type(self.current).__name__} {self.current!r}")
        if self.prior is not None and not isinstance(self.prior, Measurement):
            raise TypeError(f"prior must be a Measurement or None, got {type(self.prior).__name__} {self.prior!r}")
        boolean(self.is_baseline_exam, "is_baseline_exam")
        if self.prior_category is not None:
            object.__setattr__(self, "prior_category", to_enum(LungRads, self.prior_category, "prior_category"))
        if self.interval_days is not None:
            object.__setattr__(self, "interval_days", positive(self.interval_days, "interval_days"))
        if self.is_baseline_exam:
            for argument in ("prior", "interval_days", "prior_category"):
                value = getattr(self, argument)
                if value is not None:
                    raise ValueError(f"{argument} must be None at a baseline exam, got {value!r}")
        elif self.prior is None:
            if self.prior_category is not None:
                raise ValueError(
                    f"prior_category needs a prior measurement (None: a new nodule), got {self.prior_category!r}"
                )
        elif self.interval_days is None:
            raise ValueError("interval_days is required when a prior measurement is given, got None")

    @classmethod
    def at_baseline(cls, current: Measurement) -> NoduleHistory:
        """A nodule on the patient's baseline (first) screening CT."""
        return cls(current=current, is_baseline_exam=True)

    @classmethod
    def new_at_follow_up(cls, current: Measurement) -> NoduleHistory:
        """A nodule that is NEW on a follow-up CT: the prior CT did not show it."""
        return cls(current=current)

    @classmethod
    def at_follow_up(
        cls,
        current: Measurement,
        prior: Measurement,
        interval_days: float,
        prior_category: LungRads | str | None = None,
    ) -> NoduleHistory:
        """A nodule seen before: its prior measurement, ``interval_days`` later, and its prior category."""
        return cls(
            current=current,
            prior=prior,
            interval_days=interval_days,
            prior_category=None if prior_category is None else to_enum(LungRads, prior_category, "prior_category"),
        )


def nodule_category(history: NoduleHistory) -> Assessment:
    """The Lung-RADS v2022 category of one nodule, with the reason (see the module docstring for the rules)."""
    if not isinstance(history, NoduleHistory):
        raise TypeError(f"history must be a NoduleHistory, got {type(history).__name__} {history!r}")
    current = history.current
    if current.nodule_type is NoduleType.CALCIFIED:
        return Assessment(C1, f"{_describe(current)}: benign calcification or fat -> 1")
    if history.is_baseline_exam:
        category, rule = _baseline_band(current)
        reason = f"{_describe(current)} at baseline: {rule} -> {category}"
    elif history.prior is None:
        category, rule = _new_band(current)
        reason = f"new {_describe(current)}: {rule} -> {category}"
    else:
        category, reason = _follow_up(history, history.prior)
    if current.spiculated and category in SUSPICIOUS_FEATURE_ELIGIBLE:
        return Assessment(C4X, f"{reason}; spiculated -> 4X", before_features=category)
    return Assessment(category, reason)


def exam_category(histories: Iterable[NoduleHistory]) -> Assessment:
    """The category of an exam: that of its most suspicious nodule (the first one on a tie); 1 with no nodules."""
    assessments = [nodule_category(history) for history in histories]
    if not assessments:
        return Assessment(C1, "no nodules -> 1")
    worst = max(range(len(assessments)), key=lambda index: assessments[index].category)
    return Assessment(
        assessments[worst].category,
        f"most suspicious of {len(assessments)} nodule(s) is #{worst + 1}: {assessments[worst].reason}",
    )


def management(category: LungRads | str) -> str:
    """The Lung-RADS v2022 management recommendation for a category."""
    return MANAGEMENT[to_enum(LungRads, category, "category")]


def _follow_up(history: NoduleHistory, prior: Measurement) -> tuple[LungRads, str]:
    """Category and reason of a nodule seen on the prior CT (rule 4 of the module docstring)."""
    current = history.current
    interval = history.interval_days
    if interval is None:  # NoduleHistory guarantees it; kept for the type checker
        raise ValueError("interval_days is required when a prior measurement is given, got None")
    size = current.mean_diameter_mm
    change = f"prior {prior.mean_diameter_mm:.1f} mm, {interval:g} days"
    if current.nodule_type is NoduleType.GROUND_GLASS:
        growing = _is_growth(size - prior.mean_diameter_mm, interval)
        if size < GROUND_GLASS_LARGE_MM:
            rule = f"< {GROUND_GLASS_LARGE_MM:g} mm"
            return C2, f"{_describe(current)} ({change}): {rule} -> 2"
        if growing:
            rule = f">= {GROUND_GLASS_LARGE_MM:g} mm and growing > {GROWTH_MM:g} mm within 12 months"
            return C3, f"{_describe(current)} ({change}): {rule} -> 3"
        rule = f">= {GROUND_GLASS_LARGE_MM:g} mm stable or slowly growing"
        return C2, f"{_describe(current)} ({change}): {rule} -> 2"

    if current.nodule_type is NoduleType.PART_SOLID:
        solid_now, solid_before = _solid_size_mm(current), _solid_size_mm(prior)
        if solid_before == 0:
            category, rule = _lookup(PART_SOLID_NEW_OR_GROWING_SOLID_COMPONENT, solid_now)
            return category, f"{_describe(current)} ({change}): new solid component {rule} -> {category}"
        if _is_growth(solid_now - solid_before, interval):
            category, rule = _lookup(PART_SOLID_NEW_OR_GROWING_SOLID_COMPONENT, solid_now)
            growth = f"solid component growing {solid_before:.1f} -> {solid_now:.1f} mm in {interval:g} days"
            return category, f"{_describe(current)}: {growth}, {rule} -> {category}"
    elif _is_growth(size - prior.mean_diameter_mm, interval):
        category, rule = _lookup(SOLID_GROWING, size)
        growth = f"growing {prior.mean_diameter_mm:.1f} -> {size:.1f} mm in {interval:g} days"
        return category, f"{_describe(current)} {growth}: {rule} -> {category}"

    size_category, size_rule = _baseline_band(current)
    prior_band, _ = _baseline_band(prior)
    if size_category > prior_band:
        return size_category, f"{_describe(current)} ({change}) crossed into the band {size_rule} -> {size_category}"
    prior_category = history.prior_category
    if prior_category is None:
        return size_category, f"{_describe(current)} ({change}), no prior category: {size_rule} -> {size_category}"
    if prior_category in STEP_DOWN:
        stepped, minimum_days = STEP_DOWN[prior_category]
        if interval >= minimum_days:
            return stepped, (
                f"{_describe(current)} ({change}): category {prior_category} stable or decreased after "
                f">= {minimum_days:g} days, steps down -> {stepped}"
            )
    return prior_category, f"{_describe(current)} ({change}) stable: keeps prior category {prior_category}"


def _baseline_band(measurement: Measurement) -> tuple[LungRads, str]:
    """Category and rule of a nodule by size alone: the baseline table of its type."""
    if measurement.nodule_type is NoduleType.CALCIFIED:
        return C1, "benign calcification or fat"
    if measurement.nodule_type is NoduleType.SOLID:
        return _lookup(SOLID_BASELINE, measurement.mean_diameter_mm)
    if measurement.nodule_type is NoduleType.GROUND_GLASS:
        return _lookup(GROUND_GLASS_BASELINE_OR_NEW, measurement.mean_diameter_mm)
    if measurement.mean_diameter_mm < PART_SOLID_TOTAL_MM:
        return C2, f"total < {PART_SOLID_TOTAL_MM:g} mm"
    category, rule = _lookup(PART_SOLID_SOLID_COMPONENT, _solid_size_mm(measurement))
    return category, f"total >= {PART_SOLID_TOTAL_MM:g} mm, solid component {rule}"


def _new_band(measurement: Measurement) -> tuple[LungRads, str]:
    """Category and rule of a nodule that is new at a follow-up exam."""
    if measurement.nodule_type is NoduleType.SOLID:
        return _lookup(SOLID_NEW, measurement.mean_diameter_mm)
    if measurement.nodule_type is NoduleType.GROUND_GLASS:
        return _lookup(GROUND_GLASS_BASELINE_OR_NEW, measurement.mean_diameter_mm)
    if measurement.nodule_type is NoduleType.CALCIFIED:
        return C1, "benign calcification or fat"
    if measurement.mean_diameter_mm < PART_SOLID_TOTAL_MM:
        return C3, f"total < {PART_SOLID_TOTAL_MM:g} mm"
    category, rule = _lookup(PART_SOLID_NEW_OR_GROWING_SOLID_COMPONENT, _solid_size_mm(measurement))
    return category, f"total >= {PART_SOLID_TOTAL_MM:g} mm, new solid component {rule}"


def _lookup(bands: Bands, size_mm: float) -> tuple[LungRads, str]:
    """The category of ``size_mm`` in a size table, and the band as text (``"8 to < 15 mm"``)."""
    index = max(i for i, (lower, _) in enumerate(bands) if size_mm >= lower)
    lower, category = bands[index]
    if index == len(bands) - 1:
        return category, f">= {lower:g} mm"
    upper = bands[index + 1][0]
    if index == 0:
        return category, f"< {upper:g} mm"
    return category, f"{lower:g} to < {upper:g} mm"


def _is_growth(increase_mm: float, interval_days: float) -> bool:
    """Lung-RADS growth: an increase of more than 1.5 mm (to 0.1 mm) within 12 months (<= 366 days)."""
    return round_mm(increase_mm) > GROWTH_MM and interval_days <= GROWTH_WINDOW_DAYS


def _solid_size_mm(measurement: Measurement) -> float:
    """Size of the solid tissue (mm): the solid component of a part-solid nodule, 0 for ground glass,
    the mean diameter otherwise."""
    if measurement.nodule_type is NoduleType.GROUND_GLASS:
        return 0.0
    if measurement.solid_component_mm is not None:
        return measurement.solid_component_mm
    return measurement.mean_diameter_mm


def _describe(measurement: Measurement) -> str:
    """``solid 8.4 mm`` or ``part-solid 10.0 mm with solid component 6.5 mm``."""
    text = f"{measurement.nodule_type.label} {measurement.mean_diameter_mm:.1f} mm"
    if measurement.solid_component_mm is not None:
        text += f" with solid component {measurement.solid_component_mm:.1f} mm"
    return text
