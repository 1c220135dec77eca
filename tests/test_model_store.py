"""Models served from a store URL (S3 here): fetched, cached, and refused when the hash is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import WeightsIntegrityError, get_entry, load_detector
from models.store import fetch, publish
from nightscan.settings import Settings
from nightscan.storage import open_storage

REF = Settings().detector


def test_publish_fetch_and_load_from_s3(s3_settings: Settings, tmp_path: Path) -> None:
    store = open_storage(s3_settings.archive_url.replace("/archive", "/models"), s3_settings)
    publish(store)
    registry = fetch(store, REF, tmp_path / "cache")
    detector = load_detector(REF, registry_path=registry)
    assert detector.sha256 == get_entry(REF).sha256
    assert fetch(store, REF, tmp_path / "cache") == registry  # a second fetch reuses the cached weights


def test_tampered_weights_in_the_store_are_refused(tmp_path: Path) -> None:
    store = open_storage((tmp_path / "store").as_uri())
    publish(store)
    entry = get_entry(REF)
    store.put(entry.weights, b"not the published weights")
    registry = fetch(store, REF, tmp_path / "cache")
    with pytest.raises(WeightsIntegrityError, match=entry.sha256):
        load_detector(REF, registry_path=registry)
