"""Load one series into a :class:`~workers.volume.Volume`: fetch and decode its objects at once, then place them.

Fetching runs in threads (many GETs in flight). Each object is decoded as soon as it arrives: in the
fetching thread, or, for the slow codec that holds the GIL (HTJ2K: ``Codec.heavy``), in a pool of
decoder processes. The codecs hold the GIL, so more threads add nothing; a process costs a copy of the
pixels back to this one, which pays only where decoding a slice takes far longer than copying it
(``python -m bench.decode_speed``).
The compressed bytes of an object are dropped once it is decoded; decoded frames wait as stored integers
(half the size of float32) and become HU one at a time, straight into the volume, so memory stays in
proportion to one series: the volume plus half of it.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from workers.codecs import is_heavy, transfer_syntax_of
from workers.decode import DecodedObject, DecodeError, decode_object
from workers.volume import IrregularSeries, Volume, assemble, plan_volume

log = logging.getLogger(__name__)


class DecodePool:
    """Where objects are decoded: in the calling thread (``processes`` 1) or in that many worker processes.

    The processes start from a fork server (nothing of the parent, torch or CUDA included, is inherited), on
    first use, and live until :meth:`close`. A decoder process that dies (a codec crashing on bad data) fails
    that series with a :class:`DecodeError`, and the next series gets a fresh pool.
    """

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def inline(self) -> bool:
        """Whether objects are decoded in the calling thread."""
        return self.processes == 1

    def submit(self, key: str, data: bytes) -> Future[DecodedObject]:
        """Decode ``data`` (the object at ``key``) in a worker process."""
        if self._executor is None:
            _allow_children()
            with self._lock:  # fetching threads submit at once: one executor, not one each
                if self._executor is None:
                    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
                    context = multiprocessing.get_context(method)
                    self._executor = ProcessPoolExecutor(self.processes, mp_context=context)
        return self._executor.submit(decode_object, key, data)

    def reset(self) -> None:
        """Drop a broken pool; the next submit starts a new one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _allow_children() -> None:
    """Let a daemonic process (a Celery prefork child) start decoder processes.

    multiprocessing refuses children to daemonic processes so that they are not orphaned when it is
    killed. Decoder processes do not outlive their parent: a pool worker exits when its call queue's pipe
    closes, and the fork server when its parent's pipe does. So the flag is cleared in this process. Celery's
    billiard also leaves its own kind of authentication key here, which the standard library cannot pickle
    to the new processes: it is replaced by the same key as the standard library's kind.
    """
    process = multiprocessing.current_process()
    config = process._config  # type: ignore[attr-defined]
    if config.get("daemon"):
        config["daemon"] = False
    config["authkey"] = multiprocessing.process.AuthenticationString(bytes(process.authkey))


@dataclass(frozen=True, slots=True)
class LoadStats:
    """How loading went: ``fetch_s`` until the last object arrived, ``decode_s`` what decoding took after that."""

    objects: int
    frames: int
    bytes: int
    padded_pixels: int
    fetch_s: float
    decode_s: float


def load_series(
    keys: Sequence[str],
    fetch: Callable[[str], bytes],
    *,
    fetch_threads: int,
    pool: DecodePool,
    policy: IrregularSeries = IrregularSeries.REJECT,
) -> tuple[Volume, LoadStats]:
    """Fetch the objects ``keys`` with ``fetch``, decode them and build the volume.

    Raises :class:`DecodeError` for an object that cannot be decoded (the first, in key order) and
    :class:`~workers.volume.VolumeError` when the frames do not form a volume; errors of ``fetch`` propagate.
    """
    if not keys:
        raise DecodeError("the series has no objects")
    start = time.perf_counter()
    arrived: list[float] = []
    sizes: list[int] = []

    def fetch_and_decode(key: str) -> DecodedObject | Future[DecodedObject]:
        data = fetch(key)
        arrived.append(time.perf_counter())
        sizes.append(len(data))
        if pool.inline or not is_heavy(transfer_syntax_of(data)):
            return decode_object(key, data)
        return pool.submit(key, data)

    with ThreadPoolExecutor(max_workers=max(1, min(fetch_threads, len(keys)))) as fetchers:
        pending = list(fetchers.map(fetch_and_decode, keys))
    fetched = max(arrived)
    objects: list[DecodedObject | None] = [_result(key, item, pool) for key, item in zip(keys, pending, strict=True)]
    del pending
    frames = [frame for obj in objects if obj for frame in obj.frames]
    where = [(o, f) for o, obj in enumerate(objects) if obj for f in range(len(obj.frames))]
    remaining = [len(obj.frames) if obj else 0 for obj in objects]
    padded = sum(obj.padded for obj in objects if obj)
    plan = plan_volume(frames, policy)

    def take(i: int) -> np.ndarray:
        """Frame i's values (rows, columns); an object's pixels are freed once all its frames are placed."""
        o, f = where[i]
        obj = objects[o]
        assert obj is not None, f"frame {i} taken twice"
        remaining[o] -= 1
        if remaining[o] == 0:
            objects[o] = None
        return obj.values(f)

    volume = assemble(plan, take)
    stats = LoadStats(
        objects=len(keys),
        frames=len(frames),
        bytes=sum(sizes),
        padded_pixels=padded,
        fetch_s=fetched - start,
        decode_s=time.perf_counter() - fetched,
    )
    return volume, stats


def _result(key: str, item: DecodedObject | Future[DecodedObject], pool: DecodePool) -> DecodedObject:
    if isinstance(item, DecodedObject):
        return item
    try:
        return item.result()
    except BrokenProcessPool as exc:
        pool.reset()
        raise DecodeError(f"{key}: the decoder process died while decoding it ({exc})") from exc
