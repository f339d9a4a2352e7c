"""The soundsift model file: one ``torch.save`` dict with format tag, version, model config, meta and the
trainable state dict, read back with ``torch.load(weights_only=True)``; ``identity`` is its sha256.

``tau`` (the model's temperature) is a top-level field added after version 1 was published: older
soundsift reads such files (it ignores the field), and files without it load with ``DEFAULT_TAU``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from soundsift.atomic import atomic_write
from soundsift.downloader import file_digest
from soundsift.errors import ModelFileError, check_format, load_failure
from soundsift.model import DEFAULT_TAU, DualEncoder
from soundsift.version import __version__

FORMAT = "soundsift-model"
FORMAT_VERSION = 1


def identity(path: str | Path) -> str:
    """What identifies a model: the sha256 of the file that holds its weights."""
    return file_digest(path, "sha256")


def save_model(model: DualEncoder, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to a single file, atomically."""
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "soundsift_version": __version__,
        "config": model.config,
        "tau": float(model.tau),
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_tau(doc: dict[str, Any], source: str | Path) -> float:
    """The ``tau`` field of a model file or ``config.json`` (``DEFAULT_TAU`` when absent: older files)."""
    tau = doc.get("tau", DEFAULT_TAU)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ModelFileError(f"{source}: tau must be a number > 0, got {tau!r}")
    return float(tau)


def model_from_file(doc: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str | Path,
                    weights: str | Path) -> DualEncoder:
    """The DualEncoder a validated model file or ``config.json`` (``doc``) describes, with its weights,
    temperature, meta and ``identity`` (the sha256 of ``weights``, the file that holds them)."""
    model = DualEncoder.from_config(doc["config"], tau=read_tau(doc, source))
    model.load_trainable_state_dict(state_dict, source=str(weights))
    model.identity = identity(weights)
    model.meta = doc.get("meta", {})
    return model


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a saved model file (weights only, no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable soundsift model file ({load_failure(exc)})") from exc
    check_format(payload, path, FORMAT, FORMAT_VERSION, ModelFileError, "soundsift model file")
    return payload
