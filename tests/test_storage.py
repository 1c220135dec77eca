"""The storage interface, the same tests on a folder and on S3 (moto's server over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightscan.settings import Settings
from nightscan.storage import Storage, StorageError, open_storage


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return open_storage((tmp_path / "store").as_uri())
    settings: Settings = request.getfixturevalue("s3_settings")
    return open_storage(settings.archive_url, settings)


def test_put_get_and_ranged_get(storage: Storage) -> None:
    info = storage.put("a/b/object.dcm", b"0123456789")
    assert info.key == "a/b/object.dcm" and info.size == 10 and info.etag
    assert storage.get("a/b/object.dcm") == b"0123456789"
    assert storage.get_range("a/b/object.dcm", 2, 3) == b"234"
    assert storage.get_range("a/b/object.dcm", 8, 100) == b"89"


def test_listing_is_paged_sorted_and_reports_size_and_etag(storage: Storage) -> None:
    keys = [f"p{i % 3}/obj{i:02d}" for i in range(7)]
    for i, key in enumerate(keys):
        storage.put(key, b"x" * (i + 1))
    pages = list(storage.list(page_size=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    listed = [o for page in pages for o in page]
    assert [o.key for o in listed] == sorted(keys)
    sizes = {o.key: o.size for o in listed}
    assert sizes == {key: i + 1 for i, key in enumerate(keys)}
    assert all(o.etag and o.last_modified for o in listed)
    under_p1 = [o.key for page in storage.list(prefix="p1/") for o in page]
    assert under_p1 == sorted(k for k in keys if k.startswith("p1/"))


def test_etag_changes_when_an_object_is_rewritten(storage: Storage) -> None:
    first = storage.put("k", b"one")
    second = storage.put("k", b"other content")
    listed = next(iter(storage.list()))[0]
    assert first.etag != second.etag
    assert listed.etag == second.etag and listed.size == len(b"other content")


def test_missing_object_names_the_key(storage: Storage) -> None:
    with pytest.raises(StorageError, match=r"missing\.dcm"):
        storage.get("missing.dcm")


def test_unsupported_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        open_storage("ftp://x/y")


def test_file_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "store").as_uri())
    with pytest.raises(StorageError, match="escapes"):
        storage.put("../outside", b"x")


def test_split_partitions_every_key_once(storage: Storage) -> None:
    keys = ["top.dcm", "a/1.dcm", "a/b/2.dcm", "c/3.dcm"]
    for key in keys:
        storage.put(key, b"x")
    prefixes, top = storage.split()
    assert prefixes == ["a/", "c/"] and [o.key for o in top] == ["top.dcm"]
    listed = [o.key for p in prefixes for page in storage.list(p) for o in page] + [o.key for o in top]
    assert sorted(listed) == sorted(keys)


def test_parallel_listing_yields_every_object_once(storage: Storage) -> None:
    from scheduler.discovery import list_pages

    keys = [f"p{i % 7}/s{i % 3}/obj{i:03d}" for i in range(60)] + ["root.dcm"]
    for key in keys:
        storage.put(key, b"x")
    listed = [o.key for page in list_pages(storage, parallel=4) for o in page]
    assert sorted(listed) == sorted(keys)
