"""The Celery app's delivery settings (REFERENCE.md section 6) and its queues."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightscan.settings import EMBEDDED_BROKER, Settings
from workers.app import ANALYZE_STUDY, create_app


def test_at_least_once_settings_and_queues(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/15"))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    timeout = Settings().broker_visibility_timeout_s
    assert conf.broker_transport_options["visibility_timeout"] == timeout
    assert conf.result_backend_transport_options["visibility_timeout"] == timeout
    assert conf.visibility_timeout == timeout
    assert conf.task_time_limit < timeout
    assert {q.name for q in conf.task_queues} == {"ingest", "gpu", "cpu"}
    assert conf.task_routes[ANALYZE_STUDY]["queue"] == "gpu"
    assert ANALYZE_STUDY in app.tasks


def test_embedded_broker_is_the_default(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, broker_url=""))
    assert app.conf.broker_url == EMBEDDED_BROKER
    assert app.conf.broker_transport_options["data_folder_in"] == str((tmp_path / "broker").resolve())


def test_time_limit_must_stay_below_the_visibility_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task_time_limit_s=9000"):
        create_app(Settings(data_dir=tmp_path, task_time_limit_s=9000, broker_visibility_timeout_s=7200))


def test_task_payload_is_validated(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    with pytest.raises(TypeError, match="'12'"):
        app.tasks[ANALYZE_STUDY].run("12")
