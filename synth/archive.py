"""``nightscan synth``: a synthetic screening archive of patients over time, with its ground truth.

Patients are generated independently (in parallel processes when ``workers > 1``), one study at a
time, so memory stays in proportion to one series per process. Everything is deterministic for a
seed: the same seed and options give the same objects, byte for byte.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
from pydicom.uid import generate_uid

from synth.dicom import EncodeOptions, SeriesGeometry, SeriesHeader
from synth.layout import KeyLayout
from synth.manifest import (
    GroundTruth,
    NoduleRecord,
    ObservedNodule,
    StudyTruth,
    TrackTruth,
    WrittenObjectRecord,
    clinical_truth,
    jsonable,
    read_ground_truth,
    write_ground_truth,
)
from synth.messy import Mess, write_study_objects
from synth.nodules import measure
from synth.patients import PatientPlan, plan_patient
from synth.pose import Grid
from synth.render import render_study, scan_grid

logger = logging.getLogger(__name__)

__all__ = [
    "ArchiveOptions",
    "GroundTruth",
    "NoduleRecord",
    "StudyTruth",
    "generate_archive",
    "read_ground_truth",
    "write_ground_truth",
]


@dataclass(frozen=True)
class ArchiveOptions:
    """How the archive is drawn and written (sizes in voxels, spacings in mm)."""

    shape_zyx: tuple[int, int, int] = (100, 128, 128)
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 2.5, 2.5)
    studies_per_patient: tuple[int, int] = (1, 1)  # fewest and most studies per patient
    layout: KeyLayout = KeyLayout.HIERARCHICAL
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    mess: Mess = field(default_factory=Mess)

    def __post_init__(self) -> None:
        low, high = self.studies_per_patient
        if not 1 <= low <= high <= 4:
            raise ValueError(f"studies_per_patient must be (low, high) with 1 <= low <= high <= 4, got {(low, high)}")


def generate_archive(
    put: Callable[[str, bytes], object],
    *,
    n_patients: int,
    seed: int,
    studies_per_patient: int | tuple[int, int] = 1,
    shape_zyx: tuple[int, int, int] = (100, 128, 128),
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 2.5, 2.5),
    options: ArchiveOptions | None = None,
    workers: int = 1,
    on_study: Callable[[], None] | None = None,
) -> GroundTruth:
    """Write ``n_patients`` synthetic patients through ``put(key, data)``; return the ground truth.

    ``options`` overrides ``studies_per_patient``, ``shape_zyx`` and ``spacing_zyx_mm`` when given.
    ``on_study`` is called after each study is written (for progress bars).
    """
    if n_patients < 0:
        raise ValueError(f"n_patients must be >= 0, got {n_patients}")
    if options is None:
        count = (
            (studies_per_patient, studies_per_patient) if isinstance(studies_per_patient, int) else studies_per_patient
        )
        options = ArchiveOptions(shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm, studies_per_patient=count)
    studies: list[StudyTruth] = []
    tracks: list[TrackTruth] = []
    for objects, patient_studies, patient_tracks in _patients(n_patients, seed, options, workers):
        for key, data in objects:
            put(key, data)
        studies.extend(patient_studies)
        tracks.extend(patient_tracks)
        for _ in patient_studies:
            if on_study:
                on_study()
    return GroundTruth(seed=seed, studies=studies, tracks=tracks, options=_options_dict(options))


PatientResult = tuple[list[tuple[str, bytes]], list[StudyTruth], list[TrackTruth]]


def _patients(n_patients: int, seed: int, options: ArchiveOptions, workers: int) -> Iterator[PatientResult]:
    """Each patient's objects and truth, in patient order; at most ``2 * workers`` patients in flight."""
    if workers <= 1:
        for index in range(n_patients):
            yield generate_patient(seed, index, options)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = []
        for index in range(n_patients):
            pending.append(pool.submit(generate_patient, seed, index, options))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def generate_patient(seed: int, index: int, options: ArchiveOptions) -> PatientResult:
    """Draw and write one patient (deterministic for ``seed`` and ``index``)."""
    rng = np.random.default_rng([seed, index])
    low, high = options.studies_per_patient
    plan = plan_patient(rng, index, n_studies=int(rng.integers(low, high + 1)))
    objects: list[tuple[str, bytes]] = []
    studies: list[StudyTruth] = []
    prior = None
    for s in range(len(plan.studies)):
        truth, prior = _write_study(plan, s, seed, options, prior, lambda k, d: objects.append((k, d)))
        studies.append(truth)
        logger.info(
            "patient %d study %d: %d nodules, Lung-RADS %s", index + 1, s + 1, len(truth.nodules), truth.lung_rads
        )
    tracks = [
        TrackTruth(
            track_id=t.track_id,
            patient_id=plan.patient_id,
            kind=t.shape.kind.value,
            behaviour=t.behaviour.value,
            vdt_days=None if t.vdt_days is None else round(float(t.vdt_days), 1),
            lobe=t.shape.lobe,
            study_uids=[st.study_uid for st in studies if any(n.nodule_id == t.track_id for n in st.nodules)],
        )
        for t in plan.tracks
    ]
    return objects, studies, tracks


def _write_study(
    plan: PatientPlan,
    s: int,
    seed: int,
    options: ArchiveOptions,
    prior: dict | None,
    put: Callable[[str, bytes], object],
) -> tuple[StudyTruth, dict]:
    study = plan.studies[s]
    grid = scan_grid(plan.anatomy, study.pose, shape_zyx=options.shape_zyx, spacing_zyx_mm=options.spacing_zyx_mm)
    present = [(t, scale) for t, scale in plan.nodules_at(s) if _inside(grid, study.pose.to_world(t.shape.centre))]
    noise_rng = np.random.default_rng([seed, int(plan.patient_id[2:]), s, 1])
    hu = render_study(
        plan.anatomy, [(t.shape, scale) for t, scale in present], study.pose, grid, mas=study.mas, rng=noise_rng
    )

    entropy = f"{seed}/{plan.patient_id}/{s}"
    header = SeriesHeader(
        patient_id=plan.patient_id,
        patient_name=plan.name,
        patient_birth_date=plan.birth_date.strftime("%Y%m%d"),
        patient_sex=plan.sex,
        study_uid=generate_uid(entropy_srcs=[entropy, "study"]),
        series_uid=generate_uid(entropy_srcs=[entropy, "series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[entropy, "frame"]),
        study_date=study.date.strftime("%Y%m%d"),
        study_time=f"{8 + (seed + s) % 10:02d}{(7 * s) % 60:02d}00",
        accession_number=f"A{seed % 10000:04d}{plan.patient_id[2:]}{s:02d}",
        series_description=f"AXIAL {options.spacing_zyx_mm[0]:g}mm LUNG",
    )
    geometry = SeriesGeometry(origin_xyz_mm=grid.origin_xyz_mm, spacing_zyx_mm=grid.spacing_zyx_mm)
    written = write_study_objects(
        put,
        hu=hu,
        geometry=geometry,
        header=header,
        options=options.encode,
        layout=options.layout,
        mess=options.mess,
        rng=np.random.default_rng([seed, int(plan.patient_id[2:]), s, 2]),
        uid_entropy=entropy,
    )

    age = (study.date - plan.birth_date).days / 365.25
    observed = []
    records = []
    for track, scale in present:
        m = measure(track.shape, scale)
        observed.append(ObservedNodule(track.track_id, track.shape.kind, m, track.shape.spiculated, track.shape.lobe))
        world = study.pose.to_world(track.shape.centre)
        records.append((track, m, world, grid.to_voxel(world)))
    interval = (study.date - plan.studies[s - 1].date).days if s > 0 else None
    clinical, following = clinical_truth(
        observed, prior=prior, interval_days=interval, age_years=age, female=plan.sex == "F"
    )
    nodules = [
        NoduleRecord(
            nodule_id=track.track_id,
            center_xyz_mm=tuple(round(c, 2) for c in world),
            center_zyx_vox=tuple(round(c, 3) for c in voxel),
            diameter_mm=m.mean_diameter_mm,
            kind=track.shape.kind.value,
            long_axis_mm=m.long_axis_mm,
            short_axis_mm=m.short_axis_mm,
            volume_mm3=m.volume_mm3,
            solid_component_mm=m.solid_component_mm,
            lobe=track.shape.lobe,
            juxtapleural=track.shape.juxtapleural,
            spiculated=track.shape.spiculated,
            lung_rads=clinical.nodule_categories[track.track_id][0],
            lung_rads_reason=clinical.nodule_categories[track.track_id][1],
            brock_probability=clinical.brock[track.track_id][0],
            brock_defaulted=clinical.brock[track.track_id][1],
        )
        for track, m, world, voxel in records
    ]
    truth = StudyTruth(
        patient_id=plan.patient_id,
        study_uid=header.study_uid,
        series_uid=header.series_uid,
        study_date=header.study_date,
        n_instances=int(hu.shape[0]),
        shape_zyx=grid.shape_zyx,
        spacing_zyx_mm=grid.spacing_zyx_mm,
        origin_xyz_mm=grid.origin_xyz_mm,
        nodules=nodules,
        study_index=s,
        sex=plan.sex,
        age_years=round(age, 2),
        mas=round(study.mas, 1),
        pose=jsonable(asdict(study.pose)),
        lung_rads=clinical.exam_category,
        lung_rads_reason=clinical.exam_reason,
        objects=[WrittenObjectRecord(w.key, w.sop_instance_uid, str(w.role)) for w in written],
    )
    return truth, following


def _inside(grid: Grid, world: tuple[float, float, float]) -> bool:
    """True when a world point lies inside the scanned volume (nodules outside it are not imaged)."""
    voxel = grid.to_voxel(world)
    return all(0 <= v <= n - 1 for v, n in zip(voxel, grid.shape_zyx, strict=True))


def _options_dict(options: ArchiveOptions) -> dict:
    raw = asdict(options)
    raw["encode"] = {k: str(v) if not isinstance(v, int | float) else v for k, v in raw["encode"].items()}
    raw["layout"] = str(options.layout)
    return jsonable(raw)
