"""Real DICOM files from pydicom's wheel, mixed into a messy synthetic archive in S3, scanned into PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file
from sqlalchemy import select

from db.models import ArchiveObject, ObjectStatus
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import open_storage
from scheduler.scan import scan
from synth.archive import ArchiveOptions, generate_archive
from synth.layout import KeyLayout
from synth.messy import Mess
from tests.conftest import with_settings

# file in pydicom's wheel -> (status, words the recorded reason must contain)
EXPECTED = {
    "CT_small.dcm": (ObjectStatus.INDEXED, None),
    "693_J2KI.dcm": (ObjectStatus.INDEXED, None),
    "MR_small_RLE.dcm": (ObjectStatus.REJECTED, "MR Image Storage"),
    "MR_truncated.dcm": (ObjectStatus.REJECTED, "not a CT image"),
    "rtplan.dcm": (ObjectStatus.REJECTED, "RT Plan Storage"),
    "rtstruct.dcm": (ObjectStatus.REJECTED, "RT Structure Set Storage"),
    "test-SR.dcm": (ObjectStatus.REJECTED, "Comprehensive SR Storage"),
    "waveform_ecg.dcm": (ObjectStatus.REJECTED, "Waveform Storage"),
    "JPGExtended.dcm": (ObjectStatus.REJECTED, "Secondary Capture"),
    "ExplVR_BigEnd.dcm": (ObjectStatus.REJECTED, "Ultrasound"),
    "examples_ybr_color.dcm": (ObjectStatus.REJECTED, "Ultrasound Multi-frame"),
    "no_meta.dcm": (ObjectStatus.REJECTED, "no SOP Class UID"),
    "DICOMDIR": (ObjectStatus.REJECTED, "Media Storage Directory"),
}


def test_every_object_ends_indexed_or_rejected_with_its_reason(
    s3_settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    settings = with_settings(s3_settings, database_url=postgres_url)
    storage = open_storage(settings.archive_url, settings)
    for name in EXPECTED:
        storage.put(f"real/{name}", Path(get_testdata_file(name)).read_bytes())
    storage.put("real/empty.dcm", b"")
    storage.put("real/notes.txt", b"not a DICOM file at all")
    options = ArchiveOptions(
        shape_zyx=(20, 48, 48), spacing_zyx_mm=(2.5, 7.0, 7.0), layout=KeyLayout.MIXED, mess=Mess.everything()
    )
    truth = generate_archive(storage.put, n_patients=2, seed=6, options=options)

    factory = session_factory(settings)
    report = scan(settings.archive_url, settings, factory, send=None)
    with factory() as session:
        rows = {row.key: row for row in session.scalars(select(ArchiveObject))}
    assert len(rows) == report.listed == len(EXPECTED) + 2 + sum(len(s.objects) for s in truth.studies)
    for name, (status, words) in EXPECTED.items():
        row = rows[f"real/{name}"]
        assert row.status == status, (name, row.reason)
        assert words is None or words in row.reason, (name, row.reason)
    assert "empty object" in rows["real/empty.dcm"].reason
    assert rows["real/notes.txt"].status == ObjectStatus.REJECTED
    by_sop: dict[str, list[str]] = {}
    for study in truth.studies:
        for o in study.objects:
            if o.role in ("truncated", "structured_report"):
                assert rows[o.key].status == ObjectStatus.REJECTED, o
            else:  # an image, localizer or duplicate upload: each SOP instance is indexed once
                by_sop.setdefault(o.sop_instance_uid, []).append(rows[o.key].status)
    for statuses in by_sop.values():
        assert sorted(statuses) == sorted([ObjectStatus.INDEXED] + [ObjectStatus.DUPLICATE] * (len(statuses) - 1))
    # The synthetic studies are planned; the real single-slice CT files are too short a series.
    assert report.planned == len(truth.studies)
