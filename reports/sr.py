"""DICOM SR of an analysed study: a Comprehensive 3D SR holding a TID 1500 measurement report (highdicom).

One planar ROI group (TID 1410) per finding: its centre as a 3-D point in the frame of reference of the
source series, its mean diameter, long and short axes (mm) and volume (mm3), each measurement referencing
the source slice (SOP instance, frame); its type, its Lung-RADS v2022 category and, for tracked lesions, the
Brock malignancy probability (0..1). One TID 1501 group holds the exam's Lung-RADS category, referencing
the series' instances. The tracking identifier of a tracked finding is its lesion label (``L1``), with a
UID that stays the same across the patient's studies, so a viewer can follow the nodule.

Each nodule's category is :func:`screening.lungrads.nodule_category` over the lesion's tracked sizes, in
study order (baseline, new, growing, stepping down); the exam category is the longitudinal step's.
Concepts without a standard code (nodule type values, Lung-RADS categories) use the private coding
scheme ``99NIGHTSCAN``.

The SR must name the patient as the images do, for a PACS to file it: the patient and study modules are
copied from the source slice's header, read from the archive when the SR is made. They are never stored
in nightscan's database nor logged.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import date

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (
    Analysis,
    AnalysisStatus,
    ArchiveObject,
    Assessment,
    Finding,
    Instance,
    Lesion,
    Series,
    Study,
)
from nightscan.pseudonym import redact_key
from nightscan.settings import Settings
from nightscan.storage import open_storage
from screening.longitudinal import measurement_from_finding
from screening.lungrads import NoduleHistory, nodule_category
from screening.types import LungRads, NoduleType

log = logging.getLogger(__name__)

SCHEME = "99NIGHTSCAN"
"""Private coding scheme of the concepts that have no standard code."""
NODULE_TYPE = hd.sr.CodedConcept("NT", SCHEME, "Nodule type")
NODULE_TYPE_VALUES = {
    NoduleType.SOLID: hd.sr.CodedConcept("NT-S", SCHEME, "Solid nodule"),
    NoduleType.PART_SOLID: hd.sr.CodedConcept("NT-PS", SCHEME, "Part-solid nodule"),
    NoduleType.GROUND_GLASS: hd.sr.CodedConcept("NT-GG", SCHEME, "Ground-glass nodule"),
    NoduleType.CALCIFIED: hd.sr.CodedConcept("NT-C", SCHEME, "Calcified nodule"),
}
LUNG_RADS = codes.DCM.AssessmentCategory
LUNG_RADS_VALUES = {
    c: hd.sr.CodedConcept(f"LR-{c.value}", SCHEME, f"Lung-RADS v2022 category {c.value}") for c in LungRads
}
LUNG_RADS_INCOMPLETE = hd.sr.CodedConcept("LR-0", SCHEME, "Lung-RADS v2022 category 0 (incomplete)")
BROCK_METHOD = hd.sr.CodedConcept("BROCK", SCHEME, "Brock (PanCan) malignancy model")
MM = codes.UCUM.Millimeter
MM3 = codes.UCUM.CubicMillimeter
NO_UNITS = codes.UCUM.NoUnits
UID_ROOT = "1.2.826.0.1.3680043.10.1455."
"""Root of the UIDs derived here (pydicom's registered root for generated UIDs, then a fixed arc)."""


class SRError(ValueError):
    """An SR cannot be made for this analysis; the message names the analysis and the reason."""


@dataclass(frozen=True, slots=True)
class WrittenSR:
    """Where an SR went: the storage URL and key, and its SOP Instance UID."""

    url: str
    key: str
    sop_instance_uid: str


def _uid(*parts: object) -> str:
    """A UID derived from ``parts`` (the same parts give the same UID)."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts])


def _category(value: str | None) -> hd.sr.CodedConcept | None:
    if value is None:
        return None
    if value == "0":
        return LUNG_RADS_INCOMPLETE
    return LUNG_RADS_VALUES[LungRads(value)]


def nodule_categories(session: Session, analysis: Analysis) -> dict[int, LungRads]:
    """Lung-RADS v2022 category of each tracked finding of ``analysis``, by finding id, from its lesion's sizes.

    The lesion's observations are walked in study order: its first at the patient's first assessed study is a
    baseline nodule, a first one later is new, each later one is a follow-up of the one before (with the
    interval in days and the category before, so categories step down).
    """
    first_study = session.scalar(
        select(Assessment.study_date)
        .where(Assessment.patient_id == analysis.study.patient_id, Assessment.model == analysis.model)
        .order_by(Assessment.study_date.nulls_last())
        .limit(1)
    )
    lesion_ids = [f.lesion_id for f in analysis.findings if f.lesion_id is not None]
    if not lesion_ids:
        return {}
    rows = session.execute(
        select(Finding, Study.study_date)
        .join(Analysis, Analysis.id == Finding.analysis_id)
        .join(Study, Study.id == Analysis.study_id)
        .where(Finding.lesion_id.in_(lesion_ids), Analysis.model == analysis.model)
        .order_by(Finding.lesion_id, Study.study_date.nulls_last(), Finding.id)
    ).all()
    by_lesion: dict[int, list[tuple[Finding, date | None]]] = {}
    for finding, study_date in rows:
        by_lesion.setdefault(finding.lesion_id, []).append((finding, study_date))  # type: ignore[arg-type]
    out: dict[int, LungRads] = {}
    for observations in by_lesion.values():
        prior = None
        for finding, study_date in observations:
            current, _ = measurement_from_finding(
                nodule_type=finding.nodule_type,
                diameter_mm=finding.diameter_mm,
                long_axis_mm=finding.long_axis_mm,
                short_axis_mm=finding.short_axis_mm,
                solid_component_mm=finding.solid_component_mm,
            )
            if prior is None:
                baseline = study_date is not None and study_date == first_study
                history = NoduleHistory.at_baseline(current) if baseline else NoduleHistory.new_at_follow_up(current)
            else:
                before, before_date, before_category = prior
                days = max((study_date - before_date).days, 1) if study_date and before_date else 365
                history = NoduleHistory.at_follow_up(current, before, days, before_category)
            category = nodule_category(history).category
            out[finding.id] = category
            prior = (current, study_date, category)
    return out


def _evidence(session: Session, settings: Settings, analysis: Analysis) -> tuple[list[Dataset], Dataset]:
    """The source instances of the analysed series as evidence datasets, and one source header.

    The header (of the series' first instance, read from the archive) gives the patient and study modules
    and the frame of reference; the other instances are named from the index.
    """
    rows = session.execute(
        select(Instance, ArchiveObject.source, ArchiveObject.key)
        .join(ArchiveObject, ArchiveObject.id == Instance.object_id)
        .where(Instance.series_id == analysis.series_id)
        .order_by(Instance.instance_number, Instance.id)
    ).all()
    if not rows:
        raise SRError(f"analysis {analysis.id}: its series has no indexed instance")
    _, source, key = rows[0]
    try:
        data = open_storage(source, settings).get(key)
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception as exc:
        log.warning("analysis %d: source header %s unreadable: %s", analysis.id, redact_key(key), type(exc).__name__)
        raise SRError(f"analysis {analysis.id}: the source header could not be read ({type(exc).__name__})") from None
    shared = [
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ]
    evidence = []
    for instance, _, _ in rows:
        ds = Dataset()
        for name in shared:
            if name in header:
                setattr(ds, name, header.data_element(name).value)
        ds.StudyInstanceUID = analysis.study.study_instance_uid
        ds.SeriesInstanceUID = analysis.series.series_instance_uid
        ds.SOPClassUID = instance.sop_class_uid
        ds.SOPInstanceUID = instance.sop_instance_uid
        ds.Modality = analysis.series.modality
        evidence.append(ds)
    return evidence, header


def _finding_group(
    finding: Finding,
    lesion: Lesion | None,
    study: Study,
    sop_classes: dict[str, str],
    frame_of_reference: str,
    algorithm: hd.sr.AlgorithmIdentification,
    categories: dict[int, LungRads],
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """The TID 1410 group of one finding: tracking, centre (x, y, z mm), sizes, type, category, Brock."""
    if lesion is not None:
        tracking = hd.sr.TrackingIdentifier(
            uid=_uid("lesion", study.patient_id, lesion.model, lesion.label), identifier=f"L{lesion.label}"
        )
    else:
        tracking = hd.sr.TrackingIdentifier(
            uid=_uid("finding", finding.id), identifier=f"finding {finding.ordinal + 1}"
        )
    images = None
    if finding.sop_instance_uid in sop_classes:
        frames = [finding.frame_number] if finding.frame_number else None
        images = [
            hd.sr.SourceImageForMeasurement(sop_classes[finding.sop_instance_uid], finding.sop_instance_uid, frames)
        ]
    measurements = [
        hd.sr.Measurement(codes.SCT.Diameter, finding.diameter_mm, MM, referenced_images=images, algorithm_id=algorithm)
    ]
    for concept, value, unit in (
        (codes.SCT.LongAxis, finding.long_axis_mm, MM),
        (codes.SCT.ShortAxis, finding.short_axis_mm, MM),
        (codes.SCT.Volume, finding.volume_mm3, MM3),
    ):
        if value is not None:
            measurements.append(
                hd.sr.Measurement(concept, value, unit, referenced_images=images, algorithm_id=algorithm)
            )
    if lesion is not None and lesion.brock_probability is not None and lesion.last_seen == study.study_date:
        measurements.append(
            hd.sr.Measurement(codes.DCM.ProbabilityOfCancer, lesion.brock_probability, NO_UNITS, method=BROCK_METHOD)
        )
    evaluations = []
    if finding.nodule_type:
        evaluations.append(
            hd.sr.QualitativeEvaluation(NODULE_TYPE, NODULE_TYPE_VALUES[NoduleType(finding.nodule_type)])
        )
    if finding.id in categories:
        evaluations.append(hd.sr.QualitativeEvaluation(LUNG_RADS, LUNG_RADS_VALUES[categories[finding.id]]))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([[finding.center_x_mm, finding.center_y_mm, finding.center_z_mm]]),
            frame_of_reference_uid=frame_of_reference,
        ),
        finding_type=codes.SCT.Nodule,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def build_sr(session: Session, settings: Settings, analysis_id: int) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of done analysis ``analysis_id``; SRError names what is missing."""
    analysis = session.get(Analysis, analysis_id)
    if analysis is None:
        raise SRError(f"analysis {analysis_id} does not exist")
    if analysis.status is not AnalysisStatus.DONE:
        raise SRError(f"analysis {analysis_id} is {analysis.status.value}, not done")
    study, series = analysis.study, analysis.series
    evidence, header = _evidence(session, settings, analysis)
    frame_of_reference = series.frame_of_reference_uid or str(header.get("FrameOfReferenceUID", ""))
    if not frame_of_reference:
        raise SRError(f"analysis {analysis_id}: the series has no FrameOfReferenceUID")
    sop_classes = {ds.SOPInstanceUID: ds.SOPClassUID for ds in evidence}
    lesions = {
        lesion.id: lesion
        for lesion in session.scalars(
            select(Lesion).where(Lesion.id.in_([f.lesion_id for f in analysis.findings if f.lesion_id is not None]))
        )
    }
    assessment = session.scalar(select(Assessment).where(Assessment.analysis_id == analysis.id))
    categories = nodule_categories(session, analysis)
    name, _, version = analysis.model.partition("@")
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version or "unknown")
    groups: list[object] = [
        _finding_group(
            finding,
            lesions.get(finding.lesion_id) if finding.lesion_id is not None else None,
            study,
            sop_classes,
            frame_of_reference,
            algorithm,
            categories,
        )
        for finding in analysis.findings
    ]
    exam = _category(assessment.lungrads) if assessment is not None else None
    if exam is not None:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid("exam", analysis.id), identifier="exam"),
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(LUNG_RADS, exam)],
                algorithm_id=algorithm,
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID) for ds in evidence[:1]
                ],
            )
        )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", analysis.model, analysis.model_sha256),
            name="nightscan",
            manufacturer_name="nightscan",
            model_name=analysis.model,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTChestReport,
        imaging_measurements=groups,  # type: ignore[arg-type]
    )
    content_version = assessment.assessed_at.isoformat() if assessment is not None else "unassessed"
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=_uid("sr-series", study.study_instance_uid, analysis.model),
        series_number=9000,
        sop_instance_uid=_uid("sr", analysis.id, analysis.model_sha256, content_version, len(analysis.findings)),
        instance_number=1,
        manufacturer="nightscan",
        is_complete=True,
    )


def sr_bytes(sr: Dataset) -> bytes:
    """The SR as a DICOM file (Part 10)."""
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def reports_url(settings: Settings) -> str:
    """Where reports are written: ``reports_url``, or ``<data_dir>/reports`` as a file:// URL."""
    return settings.reports_url or (settings.data_dir / "reports").resolve().as_uri()


def write_sr(session: Session, settings: Settings, analysis_id: int) -> WrittenSR:
    """Build the SR of ``analysis_id`` and write it to the reports storage at ``sr/<StudyInstanceUID>/<SOP
    Instance UID>.dcm`` (UIDs only: no identifier in the key)."""
    sr = build_sr(session, settings, analysis_id)
    url = reports_url(settings)
    key = f"sr/{sr.StudyInstanceUID}/{sr.SOPInstanceUID}.dcm"
    open_storage(url, settings).put(key, sr_bytes(sr))
    log.info("analysis %d: DICOM SR %s written to the reports storage", analysis_id, sr.SOPInstanceUID)
    return WrittenSR(url, key, str(sr.SOPInstanceUID))


def study_analysis(session: Session, study_uid: str, model: str | None) -> int:
    """The id of the done analysis of study ``study_uid`` by ``model`` (default: the latest done); SRError if none."""
    query = (
        select(Analysis.id)
        .join(Study, Study.id == Analysis.study_id)
        .join(Series, Series.id == Analysis.series_id)
        .where(Study.study_instance_uid == study_uid, Analysis.status == AnalysisStatus.DONE)
        .order_by(Analysis.finished_at.desc().nulls_last(), Analysis.id.desc())
    )
    if model is not None:
        query = query.where(Analysis.model == model)
    found = session.scalar(query.limit(1))
    if found is None:
        raise SRError(f"study {study_uid!r} has no done analysis{f' by {model}' if model else ''}")
    return found
