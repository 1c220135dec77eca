"""Clinical screening rules as pure functions: Lung-RADS v2022, Brock, growth and VDT, nodule matching.

No I/O, no database, no torch: values in, values out. Units are in the names and docstrings
(mm, mm3, days). Enumerated values are ``StrEnum`` members; functions also accept their strings.
"""

from screening.brock import BTS_THRESHOLD, BrockResult, brock_probability
from screening.growth import (
    GrowthAssessment,
    VdtBand,
    assess_growth,
    sphere_volume_mm3,
    vdt_band,
    volume_doubling_time_days,
)
from screening.lungrads import Assessment, NoduleHistory, exam_category, management, nodule_category
from screening.matching import LocatedNodule, MatchedPair, MatchResult, gate_mm, match_nodules
from screening.types import LungRads, Measurement, NoduleType, mean_diameter_mm, round_mm

__all__ = [
    "BTS_THRESHOLD",
    "Assessment",
    "BrockResult",
    "GrowthAssessment",
    "LocatedNodule",
    "LungRads",
    "MatchResult",
    "MatchedPair",
    "Measurement",
    "NoduleHistory",
    "NoduleType",
    "VdtBand",
    "assess_growth",
    "brock_probability",
    "exam_category",
    "gate_mm",
    "management",
    "match_nodules",
    "mean_diameter_mm",
    "nodule_category",
    "round_mm",
    "sphere_volume_mm3",
    "vdt_band",
    "volume_doubling_time_days",
]
