"""Enhanced CT (one multi-frame object per series): decoded from its functional groups, indexed, selected, analysed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db.models import Analysis, AnalysisStatus, Finding
from nightscan.runtime import session_factory
from nightscan.settings import Settings
from nightscan.storage import ObjectInfo, open_storage
from scheduler.headers import read_header
from scheduler.scan import scan
from synth.dicom import EncodeOptions, SeriesGeometry
from synth.enhanced import enhanced_ct
from synth.phantom import make_phantom
from tests.test_volume import HEADER, ORIGIN, expected_hu, load
from workers.context import WorkerContext
from workers.decode import decode_object
from workers.pipeline import run_analysis

GEOMETRY = SeriesGeometry(origin_xyz_mm=ORIGIN, spacing_zyx_mm=(2.5, 2.5, 2.5))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(11), shape_zyx=(24, 64, 64), n_nodules=1)


@pytest.mark.parametrize("syntax", ["explicit-vr-little-endian", "jpeg-ls-lossless", "jpeg2000-lossless"])
def test_frames_are_sorted_by_position_with_their_own_rescale(phantom, syntax: str) -> None:
    n = phantom.hu.shape[0]
    frame_order = list(np.random.default_rng(3).permutation(n))
    data = enhanced_ct(
        phantom.hu,
        HEADER,
        GEOMETRY,
        options=EncodeOptions(transfer_syntax=syntax),
        per_frame_rescale=True,
        frame_order=frame_order,
    )
    decoded = decode_object("enhanced.dcm", data)
    assert len(decoded.frames) == n and all(f.multi_frame for f in decoded.frames)
    volume = load([("enhanced.dcm", data)], processes=2)
    assert volume.hu.shape == phantom.hu.shape
    assert np.abs(volume.hu - expected_hu(phantom.hu)).max() <= 1.0
    assert volume.spacing_zyx_mm == pytest.approx((2.5, 2.5, 2.5))
    assert volume.to_patient((3, 2, 1)) == pytest.approx(GEOMETRY.voxel_to_patient_mm((3, 2, 1)))
    # slice k came from the frame that holds it: frame f holds slice frame_order[f]; frame numbers are 1-based
    for k in range(n):
        assert frame_order[volume.frame_numbers[k] - 1] == k
    assert set(volume.keys) == {"enhanced.dcm"}


def test_enhanced_header_is_indexed_with_its_frames(phantom) -> None:
    data = enhanced_ct(phantom.hu, HEADER, GEOMETRY)
    header = read_header(ObjectInfo("e.dcm", len(data), "etag", None), data)
    assert header.n_frames == phantom.hu.shape[0]
    assert header.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert header.slice_thickness_mm == pytest.approx(2.5)
    assert header.image_position == pytest.approx(GEOMETRY.slice_position_mm(0))


def test_enhanced_study_is_selected_and_analysed(phantom, sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, series_quiet_s=0, decode_processes=1)
    archive = open_storage(settings.resolved_archive_url, settings)
    archive.put("enhanced/study.dcm", enhanced_ct(phantom.hu, HEADER, GEOMETRY, frame_order=list(range(24))[::-1]))
    factory = session_factory(settings)
    report = scan(settings.resolved_archive_url, settings, factory, send=None)
    assert report.status == {"indexed": 1} and report.planned == 1
    with factory() as session:
        analysis_id = session.scalar(select(Analysis.id))
    assert run_analysis(analysis_id, WorkerContext(settings)) == "done"
    with factory() as session:
        analysis = session.get(Analysis, analysis_id)
        assert analysis.status == AnalysisStatus.DONE, analysis.error
        assert analysis.volume["shape"] == [24, 64, 64] and analysis.volume["corrections"] == []
        for finding in session.scalars(select(Finding)):
            assert 1 <= finding.frame_number <= 24
