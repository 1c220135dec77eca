"""docker-compose.yml is valid for Debian's docker-compose, and wires every service nightscan needs."""

from __future__ import annotations

import os
import shutil
import subprocess

import yaml

from tests.conftest import ROOT, unavailable


def test_compose_file_is_valid_and_complete() -> None:
    executable = shutil.which("docker-compose")
    if executable is None:
        unavailable("docker-compose", "not installed (apt-get install docker-compose)")
    env = {**os.environ, "NIGHTSCAN_PSEUDONYM_KEY": "test-secret"}
    result = subprocess.run(
        [executable, "-f", str(ROOT / "docker-compose.yml"), "config"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"redis", "postgres", "minio", "scheduler", "worker"} <= set(services)
    assert services["worker"]["command"] == ["worker", "--queues", "gpu"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["scheduler"]["environment"]["NIGHTSCAN_BROKER_URL"].startswith("redis://")
