"""Turns on the device: processes sharing a device run the models one at a time; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workers.device_turn import DeviceTurn, device_name

HOLD = """
import sys, time
from pathlib import Path
from workers.device_turn import DeviceTurn
with DeviceTurn(Path(sys.argv[1]), "cpu").take():
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(folder: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that takes the turn on ``cpu`` and keeps it ``seconds``; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_process_waits_for_the_turn(tmp_path: Path) -> None:
    other = hold(tmp_path, 1.5)
    with DeviceTurn(tmp_path, "cpu").take() as waited:
        pass
    assert waited > 1.0  # the other process held the device for 1.5 s from just before the wait
    assert other.wait(timeout=10) == 0


def test_a_killed_holder_frees_the_device(tmp_path: Path) -> None:
    other = hold(tmp_path, 600)
    start = time.monotonic()
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    with DeviceTurn(tmp_path, "cpu").take() as waited:
        assert waited < 5
    assert time.monotonic() - start < 10


def test_turns_are_per_device_and_reentrant_in_sequence(tmp_path: Path) -> None:
    other = hold(tmp_path, 600)  # holds "cpu"
    try:
        turn = DeviceTurn(tmp_path, "gpu-1")
        for _ in range(2):
            with turn.take() as waited:
                assert waited < 1
    finally:
        other.kill()
        other.wait()


def test_device_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert device_name("cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert device_name("cuda") == "gpu-3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert device_name("cuda") == "gpu-0"
    with pytest.raises(ValueError, match=r"device name '\.\./x'"):
        DeviceTurn(tmp_path, "../x")
