"""A model store at any storage URL: ``registry.json`` plus the weights files it names.

``nightscan models publish URL`` copies the shipped registry and weights there; a worker with
``NIGHTSCAN_MODEL_STORE_URL`` set fetches the registry and the weights it needs into a local cache,
and :func:`models.registry.load_detector` checks their sha256 before use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from models.registry import REGISTRY_PATH, file_sha256, get_entry, list_entries, weights_path
from nightscan.storage import Storage

log = logging.getLogger(__name__)

REGISTRY_KEY = "registry.json"


def publish(store: Storage, registry_path: Path = REGISTRY_PATH) -> list[str]:
    """Upload ``registry_path`` and every weights file it lists; return the keys written."""
    keys = []
    for entry in list_entries(registry_path):
        store.put(entry.weights, weights_path(entry, registry_path).read_bytes())
        keys.append(entry.weights)
    store.put(REGISTRY_KEY, registry_path.read_bytes())
    keys.append(REGISTRY_KEY)
    log.info("published %d objects to %s", len(keys), store.url)
    return keys


def fetch(store: Storage, ref: str, cache_dir: Path) -> Path:
    """Copy the store's registry, and the weights of ``ref`` unless cached intact; return the registry path."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    registry = cache_dir / REGISTRY_KEY
    _write_atomic(registry, store.get(REGISTRY_KEY))
    entry = get_entry(ref, registry)
    target = weights_path(entry, registry)
    if not target.is_file() or file_sha256(target) != entry.sha256:
        _write_atomic(target, store.get(entry.weights))
        log.info("fetched weights of %s from %s", entry.ref, store.url)
    return registry


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so concurrent workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
