"""Per-process worker resources, made lazily on first use in the process that uses them.

Nothing here runs in a parent that forks: the database engine, storage clients, the torch device
and model weights are created inside the pool process, once, and reused by every task.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker
from nightscan.settings import Settings
from nightscan.storage import Storage, open_storage
from workers.device_turn import DeviceTurn, device_name
from workers.series import DecodePool

if TYPE_CHECKING:
    from models.classifier import CandidateClassifier
    from models.inference import NoduleDetector
    from models.spiculation import SpiculationModel

log = logging.getLogger(__name__)


class WorkerContext:
    """Resources of one worker process: database sessions, storages, the device and loaded models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._storages: dict[str, Storage] = {}
        self._detectors: dict[str, NoduleDetector] = {}
        self._classifiers: dict[str, CandidateClassifier] = {}
        self._spiculation_models: dict[str, SpiculationModel] = {}

    @cached_property
    def engine(self) -> Engine:
        """This process's own database engine."""
        return make_engine(self.settings.resolved_database_url)

    @cached_property
    def factory(self) -> sessionmaker[Session]:
        """Session factory on this process's own engine."""
        return make_sessionmaker(self.engine)

    @cached_property
    def device(self) -> str:
        """``cuda`` when this process sees a GPU, else ``cpu`` (torch threads sized to the CPU)."""
        import torch

        if torch.cuda.is_available():
            return "cuda"
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        return "cpu"

    @cached_property
    def device_turn(self) -> DeviceTurn:
        """The turn on this process's device, shared with the other processes of this machine that use it."""
        return DeviceTurn(self.settings.data_dir / "locks", device_name(self.device))

    @cached_property
    def batch_slices(self) -> int:
        """Slices per detector batch: the setting, else 64 on a GPU and 16 on the CPU."""
        return self.settings.batch_slices or (64 if self.device == "cuda" else 16)

    @cached_property
    def decode_pool(self) -> DecodePool:
        """Decoder processes (``NIGHTSCAN_DECODE_PROCESSES``, 0: one per CPU core), started on first use."""
        processes = self.settings.decode_processes or max(1, len(os.sched_getaffinity(0)))
        return DecodePool(processes)

    def storage(self, url: str) -> Storage:
        """The storage at ``url``, opened once per process."""
        if url not in self._storages:
            self._storages[url] = open_storage(url, self.settings)
        return self._storages[url]

    def detector(self, ref: str) -> NoduleDetector:
        """The detector ``name@version``, loaded (and its sha256 checked) once per process."""
        if ref not in self._detectors:
            from models.registry import load_detector

            self._detectors[ref] = load_detector(ref, device=self.device, registry_path=self._registry(ref))
            log.info("loaded %s on %s", ref, self.device)
        return self._detectors[ref]

    def classifier(self, ref: str) -> CandidateClassifier:
        """The candidate classifier ``name@version``, loaded (and its sha256 checked) once per process."""
        if ref not in self._classifiers:
            from models.registry import load_classifier

            self._classifiers[ref] = load_classifier(ref, device=self.device, registry_path=self._registry(ref))
            log.info("loaded %s on %s", ref, self.device)
        return self._classifiers[ref]

    def spiculation(self, ref: str) -> SpiculationModel:
        """The spiculation model ``name@version``, loaded (and its sha256 checked) once per process, on the CPU:
        it runs after the device turn, beside the measurement, and takes about 10 ms per finding there."""
        if ref not in self._spiculation_models:
            from models.registry import load_spiculation

            self._spiculation_models[ref] = load_spiculation(ref, device="cpu", registry_path=self._registry(ref))
            log.info("loaded %s on cpu", ref)
        return self._spiculation_models[ref]

    def _registry(self, ref: str) -> Path | None:
        """The registry to load ``ref`` from: the model store's, fetched with its weights into the cache, when
        ``NIGHTSCAN_MODEL_STORE_URL`` is set; None (the shipped registry) otherwise."""
        if not self.settings.model_store_url:
            return None
        from models import store

        cache = self.settings.data_dir / "model-cache"
        return store.fetch(self.storage(self.settings.model_store_url), ref, cache)


_contexts: dict[int, WorkerContext] = {}


def get_context(settings: Settings) -> WorkerContext:
    """This process's context (a forked child gets its own, never its parent's)."""
    pid = os.getpid()
    if pid not in _contexts:
        _contexts[pid] = WorkerContext(settings)
    return _contexts[pid]
