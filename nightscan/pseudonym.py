"""Pseudonymisation: PatientID becomes a keyed hash; the real ID and name are never stored or logged."""

from __future__ import annotations

import hashlib
import hmac


def patient_key(patient_id: str, secret: str) -> str:
    """HMAC-SHA256 of the stripped PatientID under ``secret``, as 64 hex characters.

    The same ID always gives the same key for one secret, so a patient's studies meet; without the
    secret the key cannot be reversed or recomputed from a guessed ID.
    """
    if not secret:
        raise ValueError("the pseudonym secret is empty: set NIGHTSCAN_PSEUDONYM_KEY")
    normalised = patient_id.strip()
    if not normalised:
        raise ValueError("PatientID is empty")
    return hmac.new(secret.encode(), normalised.encode(), hashlib.sha256).hexdigest()


def redact_key(key: str) -> str:
    """An object key as logs may show it: a short hash of the whole key, then its last component.

    Archive keys often start with a PatientID or a name (``PATIENT/STUDY/...``); logs must not carry
    them. The hash still lets an operator match a log line to the row that records the full key.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{digest}:{key.rsplit('/', 1)[-1]}"
