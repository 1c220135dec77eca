"""Object keys for a synthetic archive: hierarchical, flat hashed, or mixed per study.

- ``hierarchical``: ``{patient_id}/{study_uid}/{series_uid}/{instance_number:04d}.dcm``
- ``flat``: ``objects/ab/cd/<sha1 of the SOPInstanceUID>.dcm``: no patient, study or series in the key
- ``mixed``: each study is hierarchical or flat, chosen from its StudyInstanceUID (deterministic)

Keys are relative (no leading "/"); a ``prefix`` puts them under another top-level folder (``incoming/...``).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from nightscan.enums import to_enum

FLAT_ROOT = "objects"


class KeyLayout(StrEnum):
    """How object keys are built from a DICOM instance's identity."""

    HIERARCHICAL = "hierarchical"
    FLAT = "flat"
    MIXED = "mixed"


def _layout(value: KeyLayout | str) -> KeyLayout:
    return to_enum(KeyLayout, value, "layout")


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def resolve_layout(layout: KeyLayout | str, study_uid: str) -> KeyLayout:
    """The layout one study is written with: ``mixed`` becomes hierarchical or flat, from the study UID."""
    chosen = _layout(layout)
    _component(study_uid, "study_uid")
    if chosen is not KeyLayout.MIXED:
        return chosen
    return KeyLayout.FLAT if int(_sha1(study_uid)[:2], 16) % 2 else KeyLayout.HIERARCHICAL


def _component(value: str, argument: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in {".", ".."}:
        raise ValueError(f"{argument} must be a non-empty key component without '/', got {value!r}")
    return value


def object_key(
    layout: KeyLayout | str,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    name: str | None = None,
    prefix: str = "",
) -> str:
    """The key of one DICOM instance.

    ``name`` replaces the file name: hierarchical keys become ``.../{name}.dcm``; flat keys hash it with the
    SOP UID, so that a second object of the same instance (a re-upload, a partial upload) gets its own key.
    ``prefix`` (no leading or trailing "/") is put in front, as another top-level folder.
    """
    chosen = resolve_layout(layout, study_uid)
    _component(sop_uid, "sop_uid")
    if isinstance(instance_number, bool) or not isinstance(instance_number, int):
        raise TypeError(f"instance_number must be an int, got {type(instance_number).__name__} {instance_number!r}")
    if instance_number < 1:
        raise ValueError(f"instance_number must be >= 1, got {instance_number!r}")
    if name is not None:
        _component(name, "name")
    if not isinstance(prefix, str) or prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must be a str without a leading or trailing '/', got {prefix!r}")
    folders = [_component(patient_id, "patient_id"), study_uid, _component(series_uid, "series_uid")]
    if chosen is KeyLayout.HIERARCHICAL:
        file_name = f"{name}.dcm" if name is not None else f"{instance_number:04d}.dcm"
        key = "/".join([*folders, file_name])
    else:
        digest = _sha1(sop_uid if name is None else f"{sop_uid}/{name}")
        key = f"{FLAT_ROOT}/{digest[:2]}/{digest[2:4]}/{digest}.dcm"
    return f"{prefix}/{key}" if prefix else key
