"""The model registry: models/registry.json lists every shipped model with its weights hash and preprocessing.

A reference is "name@version" (or "name" for the highest version). Weights paths are relative to the
registry file's folder. Importing this module does not import torch (the scheduler reads model versions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.preprocessing import Preprocessing

if TYPE_CHECKING:
    from models.classifier import CandidateClassifier
    from models.inference import NoduleDetector
    from models.spiculation import SpiculationModel

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
    """The entry for "name@version", or for a bare "name" its highest version that is not provisional (the
    highest of all when every version is); KeyError naming `ref` if absent."""
    name, _, version = ref.partition("@")
    matches = [e for e in list_entries(registry_path) if e.name == name and (not version or e.version == version)]
    if not matches:
        known = [e.ref for e in list_entries(registry_path)]
        raise KeyError(f"model {ref!r} is not registered; known: {known}")
    released = [e for e in matches if not e.provisional]
    return max(released or matches, key=lambda e: _version_key(e.version))


def register(entry: ModelEntry, registry_path: Path | None = None) -> None:
    """Add `entry` at the end, or replace the entry with the same name and version where it stands."""
    path = registry_path or REGISTRY_PATH
    entries = list_entries(path)
    refs = [e.ref for e in entries]
    if entry.ref in refs:
        entries[refs.index(entry.ref)] = entry
    else:
        entries.append(entry)
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


def _load_network(
    ref: str, registry_path: Path | None, build: Callable[[dict[str, Any]], Any]
) -> tuple[Any, ModelEntry]:
    """The network of `ref` built by `build` (from the entry's architecture) with its sha256-verified weights."""
    import torch

    entry = get_entry(ref, registry_path)
    path = verify_weights(entry, registry_path)
    model = build(entry.architecture)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model, entry


def load_detector(ref: str, device: str = "cpu", *, registry_path: Path | None = None) -> NoduleDetector:
    """Load a registered detector onto `device` after verifying its weights' sha256. Nothing is cached."""
    from models.detector import build_from_architecture
    from models.inference import NoduleDetector

    model, entry = _load_network(ref, registry_path, build_from_architecture)
    logger.info("loaded %s (sha256 %s) on %s", entry.ref, entry.sha256[:12], device)
    return NoduleDetector(model, entry, device=device)


class DuplicateModelError(ValueError):
    """A model with this name and version is already registered."""


ENTRY_FILE_FIELDS = ("name", "version", "architecture", "preprocessing", "categories", "score_threshold")
"""Fields an entry file for :func:`register_weights` must give (sha256 and weights are filled in)."""


def add_entry(entry: ModelEntry, registry_path: Path | None = None) -> None:
    """Add `entry`; DuplicateModelError naming it when its name@version is already registered."""
    path = registry_path or REGISTRY_PATH
    if entry.ref in {e.ref for e in list_entries(path)}:
        raise DuplicateModelError(f"model {entry.ref} is already registered in {path}; give it a new version")
    register(entry, path)


def register_weights(
    weights: Path,
    fields: dict[str, Any],
    registry_path: Path | None = None,
) -> ModelEntry:
    """Register the weights file `weights` with the entry `fields` (those of :data:`ENTRY_FILE_FIELDS`, and
    optionally metrics, provisional, trained_at, training_command); its sha256 is computed here.

    Weights outside the registry's folder are copied to ``weights/<name>-<version><suffix>`` beside it
    (never over an existing file). Refuses a duplicate name@version (DuplicateModelError), a missing
    field, an unknown field, or a score threshold outside 0..1 (ValueError naming the value).
    """
    path = registry_path or REGISTRY_PATH
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    missing = [f for f in ENTRY_FILE_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"entry lacks {missing}; it must give {list(ENTRY_FILE_FIELDS)}")
    known = {f for f in ModelEntry.__dataclass_fields__} - {"weights", "sha256"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown entry fields {unknown}; known: {sorted(known)}")
    threshold = fields["score_threshold"]
    if not isinstance(threshold, int | float) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"score_threshold must be a number in 0..1, got {threshold!r}")
    if not isinstance(fields["architecture"], dict) or "builder" not in fields["architecture"]:
        raise ValueError(f"architecture must be {{'builder': name, 'kwargs': {{...}}}}, got {fields['architecture']!r}")
    ref = f"{fields['name']}@{fields['version']}"
    if ref in {e.ref for e in list_entries(path)}:
        raise DuplicateModelError(f"model {ref} is already registered in {path}; give it a new version")

    root = path.parent.resolve()
    source = weights.resolve()
    if source.is_relative_to(root):
        relative = source.relative_to(root)
    else:
        relative = Path("weights") / f"{fields['name']}-{fields['version']}{weights.suffix}"
        target = root / relative
        if target.exists():
            raise FileExistsError(f"{target} exists; refusing to overwrite it with {weights}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    entry = ModelEntry.from_dict(
        {**fields, "score_threshold": float(threshold), "weights": relative.as_posix(), "sha256": file_sha256(source)}
    )
    add_entry(entry, path)
    return entry


def load_classifier(ref: str, device: str = "cpu", *, registry_path: Path | None = None) -> CandidateClassifier:
    """Load a registered candidate classifier onto `device` after verifying its weights' sha256. Nothing is cached."""
    from models.classifier import CandidateClassifier, build_from_architecture

    model, entry = _load_network(ref, registry_path, build_from_architecture)
    logger.info("loaded %s (sha256 %s) on %s", entry.ref, entry.sha256[:12], device)
    return CandidateClassifier(model, entry, device=device)


def load_spiculation(ref: str, device: str = "cpu", *, registry_path: Path | None = None) -> SpiculationModel:
    """Load a registered spiculation model onto `device` after verifying its weights' sha256. Nothing is cached."""
    from models.spiculation import SpiculationModel, build_from_architecture

    model, entry = _load_network(ref, registry_path, build_from_architecture)
    logger.info("loaded %s (sha256 %s) on %s", entry.ref, entry.sha256[:12], device)
    return SpiculationModel(model, entry, device=device)


class RegisteredModel:
    """A network loaded from a registry entry: `name`, `version`, `sha256`, `preprocessing_version` are its
    provenance, recorded with every result it gives."""

    entry: ModelEntry
    preprocessing: Preprocessing

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def version(self) -> str:
        return self.entry.version

    @property
    def sha256(self) -> str:
        return self.entry.sha256

    @property
    def preprocessing_version(self) -> str:
        return self.preprocessing.version


def training_command(kind: str, argv: Sequence[str]) -> str:
    """The command line that reproduces a training run: `nightscan models train KIND` with `argv`."""
    return shlex.join(["nightscan", "models", "train", kind, *argv])
