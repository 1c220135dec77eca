"""Settings come from NIGHTSCAN_* variables; PatientID becomes a keyed hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightscan.pseudonym import patient_key
from nightscan.settings import EMBEDDED_BROKER, Settings


def test_defaults_are_the_embedded_set_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ARCHIVE_URL", "DATABASE_URL", "BROKER_URL"):
        monkeypatch.delenv(f"NIGHTSCAN_{name}", raising=False)
    monkeypatch.setenv("NIGHTSCAN_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'nightscan.db'}"
    assert settings.resolved_broker_url == EMBEDDED_BROKER
    assert settings.resolved_archive_url == (tmp_path / "archive").as_uri()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTSCAN_BROKER_URL", "redis://example:6379/0")
    monkeypatch.setenv("NIGHTSCAN_MAX_ATTEMPTS", "5")
    settings = Settings()
    assert settings.resolved_broker_url == "redis://example:6379/0"
    assert settings.max_attempts == 5


def test_patient_key_is_keyed_stable_and_not_the_id() -> None:
    key = patient_key("NS0001", "secret-a")
    assert key == patient_key(" NS0001 ", "secret-a")
    assert key != patient_key("NS0001", "secret-b")
    assert len(key) == 64 and "NS0001" not in key


def test_patient_key_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="PatientID"):
        patient_key("  ", "secret")
    with pytest.raises(ValueError, match="NIGHTSCAN_PSEUDONYM_KEY"):
        patient_key("NS0001", "")


def test_readme_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`NIGHTSCAN_{name.upper()}`" not in readme]
    assert missing == []


def test_redacted_key_hides_the_path_but_stays_traceable() -> None:
    from nightscan.pseudonym import redact_key

    redacted = redact_key("DOE^JOHN-12345/1.2.3/4.5.6/0007.dcm")
    assert "DOE" not in redacted and "12345" not in redacted and redacted.endswith(":0007.dcm")
    assert redacted == redact_key("DOE^JOHN-12345/1.2.3/4.5.6/0007.dcm")
