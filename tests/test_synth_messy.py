"""synth.messy and synth.layout: a study written with the real world's mess, deterministically."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from nightscan.storage import ObjectInfo
from scheduler.headers import RejectedObjectError, read_header
from synth.dicom import EncodeOptions, SeriesGeometry, SeriesHeader
from synth.layout import FLAT_ROOT, KeyLayout, object_key, resolve_layout
from synth.messy import SPLIT_PREFIX, Mess, ObjectRole, WrittenObject, write_study_objects

HEADER = SeriesHeader(
    patient_id="SYN0042",
    patient_name="SYNTH^MESSY",
    patient_birth_date="19550601",
    patient_sex="M",
    study_uid="1.2.826.0.1.3680043.8.498.101",
    series_uid="1.2.826.0.1.3680043.8.498.102",
    frame_of_reference_uid="1.2.826.0.1.3680043.8.498.103",
    study_date="20240305",
    study_time="083000",
    accession_number="ACC0042",
    series_number=2,
)
GEOMETRY = SeriesGeometry(origin_xyz_mm=(-80.0, -80.0, -200.0), spacing_zyx_mm=(2.5, 1.25, 1.25))
N_SLICES = 12
HU = np.random.default_rng(0).integers(-1024, 1500, (N_SLICES, 32, 32)).astype(np.float32)


def _write(
    seed: int = 1, *, layout: KeyLayout | str = "hierarchical", mess: Mess | None = None, **options: object
) -> tuple[list[WrittenObject], dict[str, bytes]]:
    store: dict[str, bytes] = {}

    def put(key: str, data: bytes) -> None:
        assert key not in store, f"{key} written twice"
        store[key] = data

    written = write_study_objects(
        put,
        hu=HU,
        geometry=GEOMETRY,
        header=HEADER,
        options=EncodeOptions(**options),  # type: ignore[arg-type]
        layout=layout,
        mess=Mess.everything() if mess is None else mess,
        rng=np.random.default_rng(seed),
        uid_entropy=f"study-{seed}",
    )
    return written, store


def _object(key: str, data: bytes) -> ObjectInfo:
    return ObjectInfo(key=key, size=len(data), etag="e", last_modified=datetime(2024, 1, 1, tzinfo=UTC))


def test_everything_writes_every_role_once_and_a_complete_series() -> None:
    written, store = _write()
    assert [obj.key for obj in written] == list(store)
    counts = Counter(obj.role for obj in written)
    assert counts == {
        ObjectRole.IMAGE: N_SLICES,
        ObjectRole.LOCALIZER: 2,
        ObjectRole.STRUCTURED_REPORT: 1,
        ObjectRole.DUPLICATE: 1,
        ObjectRole.TRUNCATED: 1,
    }
    # The IMAGE objects alone are the whole CT series: sorted by position they give back the volume.
    images = [pydicom.dcmread(io.BytesIO(store[o.key])) for o in written if o.role is ObjectRole.IMAGE]
    assert {ds.SeriesInstanceUID for ds in images} == {HEADER.series_uid}
    images.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    np.testing.assert_array_equal(np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in images]), HU)
    # Shuffled instance numbers: a permutation of 1..n that does not follow position.
    numbers = [int(ds.InstanceNumber) for ds in images]
    assert sorted(numbers) == list(range(1, N_SLICES + 1)) and numbers != sorted(numbers)
    # Random file names: hierarchical names are not the instance number.
    names = [o.key.rsplit("/", 1)[1] for o in written if o.role is ObjectRole.IMAGE]
    assert not any(name == f"{n:04d}.dcm" for name, n in zip(names, numbers, strict=False))
    # Localizer and SR: their own series in the same study.
    for obj in written:
        ds = pydicom.dcmread(io.BytesIO(store[obj.key]), stop_before_pixels=True, force=True)
        assert ds.StudyInstanceUID == HEADER.study_uid and ds.PatientID == HEADER.patient_id
        if obj.role is ObjectRole.LOCALIZER:
            assert "LOCALIZER" in ds.ImageType and ds.SeriesInstanceUID != HEADER.series_uid
        if obj.role is ObjectRole.STRUCTURED_REPORT:
            assert ds.Modality == "SR" and ds.SeriesNumber == 202


def test_the_same_seed_gives_the_same_keys_and_bytes() -> None:
    first, first_store = _write(5)
    again, again_store = _write(5)
    _, other_store = _write(6)
    assert first == again and first_store == again_store
    assert set(first_store).isdisjoint(other_store)


def test_flat_keys_hold_no_patient_information() -> None:
    written, store = _write(layout=KeyLayout.FLAT)
    for key in store:
        assert HEADER.patient_id not in key and HEADER.study_uid not in key and HEADER.series_uid not in key
        assert key.split("/")[0] in {FLAT_ROOT, SPLIT_PREFIX}
    assert len({obj.key for obj in written}) == len(written)


def test_the_truncated_object_is_an_extra_short_copy_of_a_complete_slice() -> None:
    for syntax in ("explicit-vr-little-endian", "jpeg-ls-lossless"):
        written, store = _write(transfer_syntax=syntax)
        (truncated,) = [o for o in written if o.role is ObjectRole.TRUNCATED]
        (full,) = [
            o for o in written if o.role is ObjectRole.IMAGE and o.sop_instance_uid == truncated.sop_instance_uid
        ]
        partial, complete = store[truncated.key], store[full.key]
        assert len(partial) < len(complete) and complete.startswith(partial)
        # Its header still reads (it names a real instance); its pixels do not.
        ds = pydicom.dcmread(io.BytesIO(partial), stop_before_pixels=True)
        assert ds.SOPInstanceUID == truncated.sop_instance_uid
        if syntax == "explicit-vr-little-endian":
            with pytest.raises(ValueError, match="less than expected"):
                _ = pydicom.dcmread(io.BytesIO(partial)).pixel_array
            # PixelData declares its length, so header indexing already sees the truncation.
            with pytest.raises(RejectedObjectError, match="truncated"):
                read_header(_object(truncated.key, partial), partial)
        else:
            # Encapsulated PixelData has no declared length: pydicom drops the unterminated element with a
            # warning, so the object reads as having no pixel data at all.
            with pytest.warns(UserWarning, match="End of file"), pytest.raises(AttributeError, match="no 'Pixel Data'"):
                _ = pydicom.dcmread(io.BytesIO(partial)).pixel_array


def test_the_duplicate_has_the_same_bytes_under_another_key() -> None:
    written, store = _write()
    (duplicate,) = [o for o in written if o.role is ObjectRole.DUPLICATE]
    (original,) = [
        o for o in written if o.role is ObjectRole.IMAGE and o.sop_instance_uid == duplicate.sop_instance_uid
    ]
    assert duplicate.key != original.key and store[duplicate.key] == store[original.key]


def test_the_split_study_lies_under_two_top_level_prefixes() -> None:
    for layout, home in ((KeyLayout.HIERARCHICAL, HEADER.patient_id), (KeyLayout.FLAT, FLAT_ROOT)):
        written, _ = _write(layout=layout, mess=Mess(split_across_prefixes=True))
        tops = Counter(obj.key.split("/")[0] for obj in written)
        assert set(tops) == {home, SPLIT_PREFIX}
        assert all(obj.key.startswith(f"{SPLIT_PREFIX}/{home}/") for obj in written if obj.key.startswith("incoming/"))


def test_a_clean_study_is_just_the_series_in_position_order() -> None:
    written, store = _write(mess=Mess())
    assert [o.role for o in written] == [ObjectRole.IMAGE] * N_SLICES
    prefix = f"{HEADER.patient_id}/{HEADER.study_uid}/{HEADER.series_uid}"
    assert list(store) == [f"{prefix}/{n:04d}.dcm" for n in range(1, N_SLICES + 1)]


def test_a_small_jpeg2000_study_writes_its_localizer_uncompressed() -> None:
    written, store = _write(mess=Mess(localizer=True), transfer_syntax="jpeg2000-lossless")
    syntaxes = {
        obj.role: pydicom.dcmread(io.BytesIO(store[obj.key]), stop_before_pixels=True).file_meta.TransferSyntaxUID
        for obj in written
    }
    assert syntaxes == {
        ObjectRole.LOCALIZER: pydicom.uid.ExplicitVRLittleEndian,
        ObjectRole.IMAGE: pydicom.uid.JPEG2000Lossless,
    }


def test_layouts() -> None:
    ids = {"patient_id": "P1", "study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5"}
    assert object_key("hierarchical", **ids, instance_number=7) == "P1/1.2.3/1.2.3.4/0007.dcm"
    assert object_key("hierarchical", **ids, instance_number=7, name="x1", prefix="incoming") == (
        "incoming/P1/1.2.3/1.2.3.4/x1.dcm"
    )
    flat = object_key(KeyLayout.FLAT, **ids, instance_number=7)
    assert flat.startswith(f"{FLAT_ROOT}/") and flat.endswith(".dcm") and len(flat.split("/")) == 4
    assert flat != object_key(KeyLayout.FLAT, **ids, instance_number=7, name="copy")
    chosen = {resolve_layout("mixed", f"1.2.840.{n}") for n in range(20)}
    assert chosen == {KeyLayout.HIERARCHICAL, KeyLayout.FLAT}
    assert resolve_layout("mixed", "1.2.840.1") == resolve_layout(KeyLayout.MIXED, "1.2.840.1")
    with pytest.raises(ValueError, match=r"layout must be one of .*got 'tree'"):
        object_key("tree", **ids, instance_number=1)
    with pytest.raises(ValueError, match="patient_id must be a non-empty key component"):
        object_key("hierarchical", **{**ids, "patient_id": "a/b"}, instance_number=1)
    with pytest.raises(ValueError, match="instance_number must be >= 1"):
        object_key("flat", **ids, instance_number=0)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="localizer must be a bool"):
        Mess(localizer=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        write_study_objects(
            lambda k, d: None,
            hu=HU,
            geometry=GEOMETRY,
            header=HEADER,
            rng=1,
            uid_entropy="x",  # type: ignore[arg-type]
        )
