"""soundsift: language-based audio retrieval with estimated audio-caption correspondences.

The public API, importable from here (each name loads its module on first use, so ``import soundsift``
stays fast and imports neither torch models, Lightning nor transformers)::

    soundsift.list_models()                             # published models, with what they are
    model = soundsift.load_model("model.pt")            # a file, a folder, a published name, or a list
    audio = model.embed_audio(["dog.wav", waveform])    # files and/or mono waveforms at model.sample_rate
    text = model.embed_text(["a dog barks"])            # (n, D) unit vectors
    soundsift.build_index("sounds/", "sounds.idx", model="model.pt")
    soundsift.update_index("sounds.idx", ["new/dog.wav", "old/"])   # only these paths: added, changed or gone
    hits = soundsift.open_index("sounds.idx").search(text="a dog barks", k=5)   # rank, id, path, score

See docs/architecture.md for the layout of the package.
"""

from __future__ import annotations

import importlib
from typing import Any

from soundsift.errors import SoundsiftError
from soundsift.version import __version__

#: public name -> the module that defines it
_API = {
    "DualEncoder": "soundsift.model",
    "load_model": "soundsift.checkpoints.load",
    "list_models": "soundsift.checkpoints.load",
    "ModelEnsemble": "soundsift.checkpoints.ensemble",
    "build_index": "soundsift.search.build",
    "update_index": "soundsift.search.build",
    "open_index": "soundsift.search.api",
    "Hit": "soundsift.search.index",
    "save_model": "soundsift.checkpoints.format",
    "save_pretrained": "soundsift.checkpoints.hub",
    "from_pretrained": "soundsift.checkpoints.hub",
    "contrastive_loss": "soundsift.losses",
    "distillation_loss": "soundsift.losses",
    "positives_from_ids": "soundsift.losses",
    "text_to_audio_metrics": "soundsift.metrics",
    "text_to_audio_metrics_from_embeddings": "soundsift.metrics",
    "audio_to_text_metrics": "soundsift.metrics",
    "map_at_k": "soundsift.metrics",
    "jackknife_ci": "soundsift.metrics",
    "write_dcase_submission": "soundsift.metrics",
    "RetrievalMetrics": "soundsift.training.metric",
    "Objective": "soundsift.training.objective",
    "load_config": "soundsift.config",
    "TeacherEmbeddings": "soundsift.correspondences",
    "TeacherEnsemble": "soundsift.correspondences",
    "ensemble_similarity": "soundsift.correspondences",
    "register_audio_encoder": "soundsift.encoders.registry",
    "register_text_encoder": "soundsift.encoders.registry",
    "register_reader": "soundsift.data.readers",
}

__all__ = ["SoundsiftError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'soundsift' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
