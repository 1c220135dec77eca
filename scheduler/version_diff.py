"""What a new model version changed: patients whose Lung-RADS category moved between two versions, and why.

Each patient is compared on the latest study that both versions assessed (``db.queries``), so a study
only one version has seen is never taken for a change of version. For a patient whose category moved,
the lesions of that study are paired across the versions with the tracking rule
(``screening.matching``: Hungarian assignment on the centres within the size-scaled gate): lesions only
the new version tracks are "added", those only the old one tracks "removed", and the pair whose size
differs most gives the biggest diameter change (new minus old, mm). Sizes are Lung-RADS mean diameters
(long and short axis) where measured, else the detector's box diameter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.orm import Session

from db.queries import TrackedFinding, assessed_patients, latest_common_assessments, tracked_findings
from screening.matching import LocatedNodule, match_nodules
from screening.types import mean_diameter_mm

log = logging.getLogger(__name__)

KEY_PREFIX = 12  # hex characters of the patient key shown: unique among millions of patients
CATEGORY_RANK = {c: i for i, c in enumerate(("0", "1", "2", "3", "4A", "4B", "4X"))}


@dataclass(frozen=True)
class PatientChange:
    """One patient compared on one study: each version's category and reason, and the lesion differences."""

    patient: str  # prefix of the pseudonymous patient key
    study_date: date | None
    category_a: str
    category_b: str
    reason_a: str
    reason_b: str
    lesions_added: tuple[str, ...] = ()  # the new version's lesions the old did not track, "L3 7.1 mm"
    lesions_removed: tuple[str, ...] = ()  # the old version's lesions the new did not track
    biggest_change: str | None = None  # "L1 -> L1", old label -> new label
    biggest_change_mm: float | None = None  # new minus old size, mm

    @property
    def direction(self) -> str:
        """``up`` (more suspicious), ``down`` or ``same``."""
        a, b = CATEGORY_RANK.get(self.category_a, -1), CATEGORY_RANK.get(self.category_b, -1)
        return "up" if b > a else "down" if b < a else "same"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: dates as ISO text, tuples as lists."""
        return {
            "patient": self.patient,
            "study_date": self.study_date.isoformat() if self.study_date else None,
            "category_a": self.category_a,
            "category_b": self.category_b,
            "direction": self.direction,
            "reason_a": self.reason_a,
            "reason_b": self.reason_b,
            "lesions_added": list(self.lesions_added),
            "lesions_removed": list(self.lesions_removed),
            "biggest_change": self.biggest_change,
            "biggest_change_mm": self.biggest_change_mm,
        }


@dataclass
class VersionDiff:
    """The comparison of ``model_a`` (old) with ``model_b`` (new)."""

    model_a: str
    model_b: str
    compared: int = 0  # patients assessed by both versions on a common study
    only_a: int = 0  # patients assessed by the old version only (not re-analysed yet)
    only_b: int = 0
    changes: list[PatientChange] = field(default_factory=list)  # changed category (all patients with ``every``)

    @property
    def up(self) -> int:
        """Patients the new version puts in a more suspicious category."""
        return sum(c.direction == "up" for c in self.changes)

    @property
    def down(self) -> int:
        """Patients the new version puts in a less suspicious category."""
        return sum(c.direction == "down" for c in self.changes)


def diff_versions(session: Session, model_a: str, model_b: str, *, every: bool = False) -> VersionDiff:
    """Compare the assessments of ``model_a`` and ``model_b`` (name@version); ``every``: unchanged patients too."""
    if model_a == model_b:
        raise ValueError(f"compare two different versions, got {model_a!r} twice")
    pairs = latest_common_assessments(session, model_a, model_b)
    both = {p.patient_id for p in pairs}
    report = VersionDiff(
        model_a=model_a,
        model_b=model_b,
        compared=len(pairs),
        only_a=len(assessed_patients(session, model_a) - both),
        only_b=len(assessed_patients(session, model_b) - both),
    )
    shown = [p for p in pairs if every or p.lungrads_a != p.lungrads_b]
    findings = tracked_findings(session, [i for p in shown for i in (p.analysis_a, p.analysis_b)])
    for p in shown:
        added, removed, biggest = _compare_lesions(findings[p.analysis_a], findings[p.analysis_b])
        report.changes.append(
            PatientChange(
                patient=p.patient_key[:KEY_PREFIX],
                study_date=p.study_date,
                category_a=p.lungrads_a,
                category_b=p.lungrads_b,
                reason_a=p.reason_a,
                reason_b=p.reason_b,
                lesions_added=added,
                lesions_removed=removed,
                biggest_change=biggest[0] if biggest else None,
                biggest_change_mm=biggest[1] if biggest else None,
            )
        )
    report.changes.sort(key=lambda c: (c.direction != "up", c.direction != "down", c.patient))
    log.info(
        "%s -> %s: %d patients compared, %d changed category (%d up, %d down); %d assessed by %s only, %d by %s only",
        model_a,
        model_b,
        report.compared,
        sum(c.direction != "same" for c in report.changes),
        report.up,
        report.down,
        report.only_a,
        model_a,
        report.only_b,
        model_b,
    )
    return report


def size_mm(finding: TrackedFinding) -> float:
    """Lung-RADS mean diameter (mm) from the measured axes, else the detector's box diameter (mm)."""
    if finding.long_axis_mm is not None and finding.short_axis_mm is not None:
        return mean_diameter_mm(finding.long_axis_mm, finding.short_axis_mm)
    return round(finding.diameter_mm, 1)


def _compare_lesions(
    old: list[TrackedFinding], new: list[TrackedFinding]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, float] | None]:
    """Lesions added and removed (label and size), and the matched pair with the largest size change."""

    def located(f: TrackedFinding) -> LocatedNodule:
        return LocatedNodule(centre_mm=f.centre_mm, diameter_mm=max(size_mm(f), 0.1))

    match = match_nodules([located(f) for f in new], [located(f) for f in old])
    added = tuple(f"L{new[i].label} {size_mm(new[i]):.1f} mm" for i in match.new)
    removed = tuple(f"L{old[i].label} {size_mm(old[i]):.1f} mm" for i in match.resolved)
    biggest: tuple[str, float] | None = None
    for pair in match.pairs:
        a, b = old[pair.prior_index], new[pair.current_index]
        change = round(size_mm(b) - size_mm(a), 1)
        if biggest is None or abs(change) > abs(biggest[1]):
            biggest = (f"L{a.label} -> L{b.label}", change)
    return added, removed, biggest
