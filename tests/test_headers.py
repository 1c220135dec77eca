"""Header indexing: ranged reads of real DICOM bytes, and clear reasons for what is not a usable image."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from nightscan.storage import FileStorage, ObjectInfo, open_storage
from scheduler.headers import RejectedObjectError, fetch_header_bytes, fetch_tail, read_header
from synth.archive import generate_archive


@pytest.fixture
def archive(tmp_path: Path) -> tuple[FileStorage, object]:
    storage = open_storage((tmp_path / "archive").as_uri())
    truth = generate_archive(storage.put, n_patients=1, seed=3, shape_zyx=(20, 64, 64))
    return storage, truth


def _objects(storage: FileStorage) -> list[ObjectInfo]:
    return [o for page in storage.list() for o in page]


def test_header_from_a_small_first_range_grows_until_complete(archive) -> None:
    storage, truth = archive
    obj = _objects(storage)[0]
    data = fetch_header_bytes(storage, obj, first_bytes=128)
    assert len(data) < obj.size  # never the whole object: pixel data is not fetched
    header = read_header(obj, data)
    study = truth.studies[0]
    assert header.study_instance_uid == study.study_uid
    assert header.series_instance_uid == study.series_uid
    assert header.modality == "CT" and header.rows == 64 and header.columns == 64
    assert header.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert header.patient_age_years is not None and header.patient_age_years > 18


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty object"),
        (b"this is a text file, not DICOM" * 10, "not"),
        (Path(get_testdata_file("test-SR.dcm")).read_bytes(), "not a CT image"),
        (Path(get_testdata_file("rtplan.dcm")).read_bytes(), "RT Plan"),
    ],
    ids=["empty", "text", "structured-report", "rt-plan"],
)
def test_unusable_objects_are_rejected_with_the_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    storage = open_storage(tmp_path.as_uri())
    obj = storage.put("object", content)
    with pytest.raises(RejectedObjectError, match=reason):
        read_header(obj, fetch_header_bytes(storage, obj, first_bytes=4096))


def test_truncated_object_is_rejected(archive, tmp_path: Path) -> None:
    storage, _ = archive
    whole = storage.get(_objects(storage)[0].key)
    obj = storage.put("truncated.dcm", whole[:-1000])
    with pytest.raises(RejectedObjectError, match="truncated"):
        read_header(obj, fetch_header_bytes(storage, obj, first_bytes=4096))


def test_truncated_compressed_object_is_rejected(tmp_path: Path) -> None:
    from synth.archive import ArchiveOptions
    from synth.dicom import EncodeOptions
    from synth.messy import Mess

    storage = open_storage((tmp_path / "archive").as_uri())
    options = ArchiveOptions(
        shape_zyx=(8, 64, 64),
        spacing_zyx_mm=(8.0, 5.0, 5.0),
        encode=EncodeOptions(transfer_syntax="jpeg-ls-lossless"),
        mess=Mess(truncated_file=True),
    )
    truth = generate_archive(storage.put, n_patients=1, seed=1, options=options)
    for record in truth.studies[0].objects:
        obj = next(o for page in storage.list(prefix=record.key) for o in page if o.key == record.key)
        data = fetch_header_bytes(storage, obj, first_bytes=4096)
        if record.role == "truncated":
            with pytest.raises(RejectedObjectError, match="truncated: encapsulated"):
                read_header(obj, data, fetch_tail(storage, obj, data))
        else:
            assert read_header(obj, data, fetch_tail(storage, obj, data)).sop_instance_uid == record.sop_instance_uid
