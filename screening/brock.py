"""Brock (PanCan) probability that a pulmonary nodule is malignant: the full model with spiculation.

Source: McWilliams et al., NEJM 2013;369:910-919; coefficients as in REFERENCE.md section 2::

    x = -6.7892 + 0.0287 (age - 62) + 0.6011 female + 0.2961 family history + 0.2953 emphysema
        - 5.3854 ((diameter / 10) ** -0.5 - 1.58113883) + type + 0.6581 upper lobe
        - 0.0824 (nodule count - 4) + 0.7729 spiculation
    p = 1 / (1 + exp(-x))

with type 0 for solid, 0.3770 for part-solid, -0.1276 for ground glass (non-solid). Diameter is the
nodule's size in mm. The British Thoracic Society acts on p >= 10 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from screening._checks import boolean, positive, real, to_enum
from screening.types import NoduleType

INTERCEPT = -6.7892
AGE_CENTRE_YEARS = 62.0
AGE_PER_YEAR = 0.0287
FEMALE = 0.6011
FAMILY_HISTORY = 0.2961
EMPHYSEMA = 0.2953
DIAMETER = -5.3854
DIAMETER_CENTRE = 1.58113883
"""(4 mm / 10) ** -0.5: the transformed diameter of the reference nodule."""
NODULE_TYPE: dict[NoduleType, float] = {
    NoduleType.SOLID: 0.0,
    NoduleType.PART_SOLID: 0.3770,
    NoduleType.GROUND_GLASS: -0.1276,
}
UPPER_LOBE = 0.6581
NODULE_COUNT_CENTRE = 4
NODULE_COUNT = -0.0824
SPICULATION = 0.7729

AGE_RANGE_YEARS = (18.0, 110.0)
"""Plausible ages (inclusive), a sanity check on the input; the model was derived on ages 50-75."""
BTS_THRESHOLD = 0.10
"""British Thoracic Society guidance: a Brock probability at or above this calls for further work-up."""


@dataclass(frozen=True)
class BrockResult:
    """The model's linear predictor ``x``, the probability of malignancy ``p`` (0-1), and the names of the
    inputs that were not given (None) and entered the model as 0."""

    x: float
    probability: float
    defaulted: tuple[str, ...]

    @property
    def above_bts_threshold(self) -> bool:
        """True when the probability is at or above the BTS 10 % threshold."""
        return self.probability >= BTS_THRESHOLD


def brock_probability(
    *,
    age_years: float,
    female: bool,
    diameter_mm: float,
    nodule_type: NoduleType | str,
    upper_lobe: bool,
    nodule_count: int,
    spiculation: bool,
    family_history: bool | None = None,
    emphysema: bool | None = None,
) -> BrockResult:
    """Brock full model with spiculation for one nodule.

    ``age_years`` in years (18-110), ``diameter_mm`` the nodule's size in mm (> 0), ``nodule_count`` the
    number of nodules in the scan (>= 1). ``family_history`` (of lung cancer) and ``emphysema`` cannot be
    read from the images: given as None they count as 0 and are listed in ``defaulted``. Calcified
    (benign-pattern) nodules are not scored: ``ValueError``.
    """
    age = real(age_years, "age_years")
    if not AGE_RANGE_YEARS[0] <= age <= AGE_RANGE_YEARS[1]:
        raise ValueError(f"age_years must be within {AGE_RANGE_YEARS[0]:g}-{AGE_RANGE_YEARS[1]:g}, got {age_years!r}")
    diameter = positive(diameter_mm, "diameter_mm")
    kind = to_enum(NoduleType, nodule_type, "nodule_type")
    if kind not in NODULE_TYPE:
        raise ValueError(f"nodule_type {kind.value!r} is benign and not scored by Brock")
    if isinstance(nodule_count, bool) or not isinstance(nodule_count, int):
        raise TypeError(f"nodule_count must be an int, got {type(nodule_count).__name__} {nodule_count!r}")
    if nodule_count < 1:
        raise ValueError(f"nodule_count must be >= 1, got {nodule_count!r}")
    defaulted: list[str] = []
    optional: dict[str, bool] = {}
    for argument, value in (("family_history", family_history), ("emphysema", emphysema)):
        if value is None:
            defaulted.append(argument)
            optional[argument] = False
        else:
            optional[argument] = boolean(value, argument)

    x = (
        INTERCEPT
        + AGE_PER_YEAR * (age - AGE_CENTRE_YEARS)
        + FEMALE * boolean(female, "female")
        + FAMILY_HISTORY * optional["family_history"]
        + EMPHYSEMA * optional["emphysema"]
        + DIAMETER * ((diameter / 10.0) ** -0.5 - DIAMETER_CENTRE)
        + NODULE_TYPE[kind]
        + UPPER_LOBE * boolean(upper_lobe, "upper_lobe")
        + NODULE_COUNT * (nodule_count - NODULE_COUNT_CENTRE)
        + SPICULATION * boolean(spiculation, "spiculation")
    )
    return BrockResult(x=x, probability=_logistic(x), defaulted=tuple(defaulted))


def _logistic(x: float) -> float:
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
