"""The model registry: models/registry.json lists every shipped model with its weights hash and preprocessing.

A reference is "name@version" (or "name" for the highest version). Weights paths are relative to the
registry file's folder. Importing this module does not import torch (the scheduler reads model versions).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.preprocessing import Preprocessing

if TYPE_CHECKING:
    from models.inference import NoduleDetector

logger = logging.getLogger(__name__)

REGISTRY_PATH = Path(__file__).with_name("registry.json")


class WeightsIntegrityError(ValueError):
    """The weights file does not have the sha256 the registry promises."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model. `weights` is relative to the registry's folder; `score_threshold` in 0..1."""

    name: str
    version: str
    architecture: dict[str, Any]
    weights: str
    sha256: str
    preprocessing: Preprocessing
    categories: list[str]
    score_threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    provisional: bool = True
    trained_at: str = ""
    training_command: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        fields = dict(data)
        fields["preprocessing"] = Preprocessing.from_dict(data["preprocessing"])
        return cls(**fields)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def list_entries(registry_path: Path | None = None) -> list[ModelEntry]:
    """Every registered model, in file order; an absent registry file is an empty registry."""
    path = registry_path or REGISTRY_PATH
    if not path.exists():
        return []
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [ModelEntry.from_dict(m) for m in raw.get("models", [])]


def get_entry(ref: str, registry_path: Path | None = None) -> ModelEntry:
    """The entry for "name@version", or the highest version of "name"; KeyError naming `ref` if absent."""
    name, _, version = ref.partition("@")
    matches = [e for e in list_entries(registry_path) if e.name == name and (not version or e.version == version)]
    if not matches:
        known = [e.ref for e in list_entries(registry_path)]
        raise KeyError(f"model {ref!r} is not registered; known: {known}")
    return max(matches, key=lambda e: _version_key(e.version))


def register(entry: ModelEntry, registry_path: Path | None = None) -> None:
    """Add `entry`, replacing an entry with the same name and version."""
    path = registry_path or REGISTRY_PATH
    entries = [e for e in list_entries(path) if e.ref != entry.ref] + [entry]
    payload = {"models": [e.to_dict() for e in entries]}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    logger.info("registered %s in %s", entry.ref, path)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(entry: ModelEntry, registry_path: Path | None = None) -> Path:
    """Absolute path of an entry's weights file."""
    return (registry_path or REGISTRY_PATH).parent / entry.weights


def verify_weights(entry: ModelEntry, registry_path: Path | None = None) -> Path:
    """Check the weights file's sha256 against the entry; returns the path or raises WeightsIntegrityError."""
    path = weights_path(entry, registry_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights of {entry.ref} not found: {path}")
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise WeightsIntegrityError(
            f"weights of {entry.ref} at {path} have sha256 {actual}, registry expects {entry.sha256}"
        )
    return path


def load_detector(ref: str, device: str = "cpu", *, registry_path: Path | None = None) -> NoduleDetector:
    """Load a registered detector onto `device` after verifying its weights' sha256. Nothing is cached."""
    import torch

    from models.detector import build_from_architecture
    from models.inference import NoduleDetector

    entry = get_entry(ref, registry_path)
    path = verify_weights(entry, registry_path)
    model = build_from_architecture(entry.architecture)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    logger.info("loaded %s (sha256 %s) on %s", entry.ref, entry.sha256[:12], device)
    return NoduleDetector(model, entry, device=device)
