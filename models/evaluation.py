"""Detection metrics on scans with known nodules (LUNA16-style hit test); kept for existing imports.

The implementation lives in :mod:`models.metrics`.
"""

from __future__ import annotations

from models.metrics import (
    FROC_FP_RATES,
    ScanScores,
    choose_threshold,
    froc,
    operating_point,
    score_scan,
    sensitivity_at_fp,
)

__all__ = [
    "FROC_FP_RATES",
    "ScanScores",
    "choose_threshold",
    "froc",
    "operating_point",
    "score_scan",
    "sensitivity_at_fp",
]
