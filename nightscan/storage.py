"""Object storage behind one small interface: ``s3://bucket/prefix`` (boto3) and ``file:///path``.

Keys are always relative to the URL's prefix and use ``/`` separators, whatever the backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from nightscan.settings import Settings


class StorageError(RuntimeError):
    """An object could not be read or written; the message names the URL and key."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object. ``size`` in bytes; ``etag`` as the store reports it, without quotes."""

    key: str
    size: int
    etag: str
    last_modified: datetime


class Storage(Protocol):
    """What nightscan needs from an object store."""

    url: str

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
        """Yield pages of at most ``page_size`` objects under ``prefix``, in key order."""
        ...

    def split(self, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        """The sub-prefixes one ``/`` level below ``prefix`` and the objects directly at that level.

        Listing each sub-prefix, plus those objects, covers every key under ``prefix`` exactly once:
        the partitions a scanner lists in parallel.
        """
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes from byte ``start`` (fewer at the end of the object)."""
        ...

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write (or overwrite) an object."""
        ...


def open_storage(url: str, settings: Settings | None = None) -> Storage:
    """Open ``s3://bucket/prefix`` or ``file:///path`` with the credentials in ``settings``."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        return FileStorage(url)
    if scheme == "s3":
        return S3Storage(url, settings or Settings())
    raise ValueError(f"unsupported storage URL {url!r}: expected s3://bucket/prefix or file:///path")


class FileStorage:
    """A folder as an object store.

    ETags are ``<mtime ns>-<size>`` in hex (as nginx and Apache make them): they change whenever a file
    is rewritten, and listing a large archive does not read every file.
    """

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ValueError(f"not a local file URL: {url!r}")
        self.url = url
        self.root = Path(unquote(parsed.path))

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"key {key!r} escapes the storage root {self.url}")
        return path

    def _info(self, key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
            last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        )

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
        """Yield pages of objects whose key starts with ``prefix``, in key order."""
        if not self.root.is_dir():
            raise StorageError(f"archive folder does not exist: {self.url}")
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root  # walk only below the prefix
        keys = sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".nightscan-tmp-")
        )
        keys = [k for k in keys if k.startswith(prefix)]
        for start in range(0, len(keys), page_size):
            yield [self._info(k, self.root / k) for k in keys[start : start + page_size]]

    def split(self, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        """Sub-folders of ``prefix`` (a folder path ending in ``/``, or empty) and the files directly in it."""
        folder = self.root / prefix
        if not folder.is_dir():
            raise StorageError(f"archive folder does not exist: {self.url}{prefix}")
        entries = sorted(folder.iterdir())
        prefixes = [f"{prefix}{p.name}/" for p in entries if p.is_dir()]
        files = [
            self._info(f"{prefix}{p.name}", p)
            for p in entries
            if p.is_file() and not p.name.startswith(".nightscan-tmp-")
        ]
        return prefixes, files

    def get(self, key: str) -> bytes:
        """Return the whole object."""
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} from {self.url}: {exc}") from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes from byte ``start``."""
        try:
            with self._path(key).open("rb") as f:
                f.seek(start)
                return f.read(length)
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} from {self.url}: {exc}") from exc

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write atomically (temporary file, then rename), so a lister never sees half an object."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".nightscan-tmp-{os.getpid()}-{path.name}")
        tmp.write_bytes(data)
        tmp.replace(path)
        return self._info(key, path)


class S3Storage:
    """An S3 bucket and prefix through boto3 (AWS, MinIO or moto's server)."""

    def __init__(self, url: str, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        secret = settings.s3_secret_access_key
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(
                max_pool_connections=settings.s3_max_connections,
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[list[ObjectInfo]]:
        """Yield one page per ListObjectsV2 call."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": page_size}
        )
        try:
            for page in pages:
                yield [self._info(item) for item in page.get("Contents", [])]
        except self.client.exceptions.NoSuchBucket as exc:
            raise StorageError(f"bucket does not exist: {self.url}") from exc

    def _info(self, item: dict) -> ObjectInfo:  # type: ignore[type-arg]
        """One ListObjectsV2 entry, its key relative to this storage's prefix."""
        return ObjectInfo(
            key=item["Key"][len(self.prefix) :],
            size=int(item["Size"]),
            etag=item["ETag"].strip('"'),
            last_modified=item["LastModified"],
        )

    def split(self, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        """Common prefixes one ``/`` below ``prefix`` and the objects directly there (ListObjectsV2, Delimiter)."""
        paginator = self.client.get_paginator("list_objects_v2")
        prefixes: list[str] = []
        objects: list[ObjectInfo] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"):
                prefixes += [p["Prefix"][len(self.prefix) :] for p in page.get("CommonPrefixes", [])]
                objects += [self._info(item) for item in page.get("Contents", [])]
        except self.client.exceptions.NoSuchBucket as exc:
            raise StorageError(f"bucket does not exist: {self.url}") from exc
        return prefixes, objects

    def _get(self, key: str, **kwargs: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **kwargs)
            return response["Body"].read()
        except Exception as exc:
            raise StorageError(f"cannot read {key!r} from {self.url}: {exc}") from exc

    def get(self, key: str) -> bytes:
        """Return the whole object."""
        return self._get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes from byte ``start`` with an HTTP Range request."""
        return self._get(key, Range=f"bytes={start}-{start + length - 1}")

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Upload one object."""
        response = self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        return ObjectInfo(key=key, size=len(data), etag=response["ETag"].strip('"'), last_modified=datetime.now(UTC))
