"""Turns on the device: the worker processes that share one GPU (or the CPU) run the models one at a time.

A gpu-queue worker runs ``1 + prefetch_studies`` processes per device. While one runs the models, the
others fetch and decode their next studies, so the device never waits for the archive: that is the
bounded prefetch, ``prefetch_studies`` decoded studies per device at most. The turn is an exclusive
``flock`` on one file per device under ``<data_dir>/locks``; the kernel releases it when its holder exits or
is killed (SIGKILL included), so a dead process never keeps the device. ``data_dir`` must be on a local disk.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DeviceTurn:
    """The right to run the models on one device, shared by every process of this machine that names it."""

    def __init__(self, folder: Path, device: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", device):
            raise ValueError(f"device name {device!r} must be letters, digits, '_', '.', ':' or '-'")
        folder.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.path = folder / f"device-{device}.lock"
        self._fd: int | None = None

    @contextmanager
    def take(self) -> Iterator[float]:
        """Wait for the device, hold it inside the block; yields the seconds spent waiting."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.perf_counter()
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # an exception from a signal handler (soft time limit) ends the wait
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def device_name(device: str) -> str:
    """The lock name of this process's device: ``cpu``, or ``gpu-<CUDA_VISIBLE_DEVICES>`` (``gpu-0`` unset)."""
    if device == "cpu":
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() or "0"
    return "gpu-" + visible.replace(",", "_")
