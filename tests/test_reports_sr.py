"""DICOM SR of an analysed study: written by `nightscan report sr`, read back with highdicom, referencing the
right instances, with each nodule's location, sizes, type, Lung-RADS category and malignancy probability."""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import pytest
from click.testing import CliRunner
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage
from sqlalchemy import select

from db.engine import make_engine, make_sessionmaker
from db.models import Finding, Instance, Series
from nightscan.cli import main
from nightscan.settings import Settings
from reports.sr import SRError, build_sr, write_sr
from tests.reports_seed import MODEL, PATIENT_IDS, SECRET, seed


def _groups(sr: hd.sr.Comprehensive3DSR) -> dict[str, hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    return {str(g.tracking_identifier): g for g in sr.content.get_planar_roi_measurement_groups()}


def _value(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, concept: object) -> float:
    (measurement,) = group.get_measurements(name=concept)
    return float(measurement.value)


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("postgres_url" if request.param == "postgres" else "sqlite_url")


def test_sr_written_by_the_cli_reads_back_with_highdicom(db_url: str, tmp_path: Path) -> None:
    seeded = seed(db_url, archive=tmp_path / "archive")
    env = {
        "NIGHTSCAN_DATABASE_URL": db_url,
        "NIGHTSCAN_PSEUDONYM_KEY": SECRET,
        "NIGHTSCAN_REPORTS_URL": (tmp_path / "pacs-outbox").as_uri(),
    }
    paths = {}
    for s in (0, 1):
        uid = seeded.studies[("PAT-0001", s)]
        result = CliRunner().invoke(main, ["report", "sr", uid, "--model", MODEL], env=env)
        assert result.exit_code == 0, result.output
        url = result.stdout.strip()
        assert url.startswith((tmp_path / "pacs-outbox").as_uri() + f"/sr/{uid}/")
        paths[s] = Path(url.removeprefix("file://"))
        for pid in PATIENT_IDS:
            assert pid not in result.stderr  # the log names UIDs only
    sr = hd.sr.srread(paths[1])
    assert isinstance(sr, hd.sr.Comprehensive3DSR) and sr.SOPClassUID == Comprehensive3DSRStorage
    assert sr.PatientID == "PAT-0001"  # copied from the source images, for the PACS to file it
    assert sr.StudyInstanceUID == seeded.studies[("PAT-0001", 1)]
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as session:
        (finding,) = session.scalars(select(Finding).where(Finding.analysis_id == seeded.analyses[("PAT-0001", 1)]))
        series_instances = set(
            session.scalars(
                select(Instance.sop_instance_uid)
                .join(Series, Series.id == Instance.series_id)
                .where(Series.series_instance_uid == f"{sr.StudyInstanceUID}.1")
            )
        )
    engine.dispose()
    # the evidence lists every instance of the analysed series
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == f"{sr.StudyInstanceUID}.1"
    assert {item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence} == series_instances
    groups = _groups(sr)
    assert set(groups) == {"L1"}
    group = groups["L1"]
    assert group.finding_type == codes.SCT.Nodule
    assert group.roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    assert group.roi.value.tolist() == [[finding.center_x_mm, finding.center_y_mm, finding.center_z_mm]]
    assert group.roi.frame_of_reference_uid == f"{sr.StudyInstanceUID}.9"
    assert _value(group, codes.SCT.Diameter) == pytest.approx(9.5)
    assert _value(group, codes.SCT.LongAxis) == pytest.approx(10.0)
    assert _value(group, codes.SCT.ShortAxis) == pytest.approx(9.0)
    assert _value(group, codes.SCT.Volume) == pytest.approx(finding.volume_mm3)
    assert _value(group, codes.DCM.ProbabilityOfCancer) == pytest.approx(0.19)
    (diameter,) = group.get_measurements(name=codes.SCT.Diameter)
    (image,) = diameter.referenced_images
    assert image.referenced_sop_instance_uid == finding.sop_instance_uid
    evaluations = {str(e.name.meaning): str(e.value.meaning) for e in group.get_qualitative_evaluations()}
    # 6.0 mm at baseline (3), then 9.5 mm a year later: growing > 1.5 mm within 12 months, >= 8 mm -> 4B
    assert evaluations == {"Nodule type": "Solid nodule", "Assessment Category": "Lung-RADS v2022 category 4B"}
    baseline = _groups(hd.sr.srread(paths[0]))["L1"]
    assert {str(e.value.meaning) for e in baseline.get_qualitative_evaluations()} >= {"Lung-RADS v2022 category 3"}
    assert baseline.tracking_uid == group.tracking_uid  # one lesion, one tracking UID across studies
    exam = sr.content.get_image_measurement_groups()
    assert [str(e.value.meaning) for g in exam for e in g.get_qualitative_evaluations()] == [
        "Lung-RADS v2022 category 4A"  # the longitudinal step's exam category, as stored
    ]


def test_sr_is_written_once_per_content_and_refuses_what_it_cannot_build(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seeded = seed(postgres_url, archive=tmp_path / "archive")
    settings = Settings(
        database_url=postgres_url, pseudonym_key=SECRET, data_dir=tmp_path, reports_url=(tmp_path / "out").as_uri()
    )
    engine = make_engine(postgres_url)
    with make_sessionmaker(engine)() as session:
        analysis = seeded.analyses[("PAT-0002", 1)]
        first = write_sr(session, settings, analysis)
        again = write_sr(session, settings, analysis)
        assert first == again  # the same results give the same SOP Instance UID and key
        assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1
        sr = hd.sr.Comprehensive3DSR.from_dataset(build_sr(session, settings, analysis))
        assert set(_groups(sr)) == {"L1", "L2"}
        with pytest.raises(SRError, match="analysis 99999 does not exist"):
            build_sr(session, settings, 99999)
        (tmp_path / "archive" / "PAT-0002" / "1" / "0.dcm").unlink()
        with pytest.raises(SRError, match=r"source header could not be read \(StorageError\)"):
            build_sr(session, settings, analysis)
    engine.dispose()
    for pid in PATIENT_IDS:
        assert pid not in caplog.text
