"""``load_model``: any model file soundsift reads, by content (``detect_format``), into a DualEncoder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from soundsift.checkpoints.format import FORMAT, identity, read_model_file
from soundsift.checkpoints.hub import from_pretrained
from soundsift.checkpoints.salsa import load_salsa_checkpoint, read_container
from soundsift.encoders.zeroshot import zero_shot_model
from soundsift.model import DualEncoder

#: Published models that ``load_model`` (and every ``--model``) accepts by name.
PUBLISHED = {
    "salsa": lambda device: load_salsa_checkpoint(None, device=device),  # the authors' DCASE 2024 model
    "zero-shot": lambda device: zero_shot_model(DualEncoder.from_config, device),  # YAMNet classes -> MiniLM, offline
}


def load_model(path: str | Path, device: str | torch.device | None = None) -> DualEncoder:
    """Load a model in eval mode: a ``save_model`` file, a ``save_pretrained`` directory (Hugging Face
    layout), the paper authors' salsa Lightning checkpoint, or a name of ``PUBLISHED`` (``"salsa"``:
    their released PaSST + RoBERTa-large model, downloaded on first use). ``model.identity`` is the sha256 of the
    file that holds the weights. ``device`` defaults to the GPU when there is one, else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(path) in PUBLISHED:  # a published model by name: downloaded (resumable) into the cache once
        return PUBLISHED[str(path)](device=device)
    kind = detect_format(path)
    if kind == "directory":
        return from_pretrained(path, device=device)
    if kind == "salsa":
        return load_salsa_checkpoint(path, device=device)
    payload = read_model_file(path)
    model = DualEncoder.from_config(payload["config"])
    model.load_trainable_state_dict(payload["state_dict"], source=str(path))
    model.identity = identity(path)
    model.meta = payload.get("meta", {})
    return model.to(device).eval()


def detect_format(path: str | Path) -> str:
    """What a model path holds: ``"directory"`` (Hugging Face layout), ``"soundsift"`` (a ``save_model``
    file), ``"salsa"`` (salsa's Lightning checkpoint), ``"missing"`` or ``"unknown"``. Cheap: tensors
    are memory-mapped, not read."""
    path = Path(path).expanduser()
    if path.is_dir():
        return "directory"
    if not path.is_file():
        return "missing"
    try:
        obj = read_container(path)
    except Exception:
        return "unknown"
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return "soundsift"
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if isinstance(state, Mapping):
        keys = [str(k) for k in state]
        if any(k.startswith("audio_embedding_model.") for k in keys) and any(
            k.startswith("sentence_embedding_model.") for k in keys
        ):
            return "salsa"
    return "unknown"
