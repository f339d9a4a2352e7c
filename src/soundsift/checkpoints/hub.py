"""Hugging Face Hub layout for soundsift models.

``save_pretrained`` writes ``config.json`` (format tag, version, model config), ``model.safetensors`` (the
trainable state dict, with the config in its metadata so the file's sha256 identifies the model) and a
``README.md`` model card; ``from_pretrained`` reads a directory or a Hub repo.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from soundsift.atomic import atomic_write, publish_dir
from soundsift.checkpoints.format import FORMAT, FORMAT_VERSION, model_from_file
from soundsift.downloader import hub_reachable
from soundsift.errors import ModelFileError, check_format
from soundsift.model import DualEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
_CARD_MARK = "<!-- model card written by soundsift.interop.save_pretrained -->"  # as first written: cards of earlier versions stay recognised
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"model config value {obj!r} ({type(obj).__name__}) cannot be written to {CONFIG_NAME}")


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; those sharing storage with an earlier one are copied (safetensors needs it)."""
    seen, out = set(), {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        if value.numel() and ptr in seen:
            value = value.clone()
        seen.add(ptr)
        out[key] = value
    return out


def _model_card(doc: dict[str, Any]) -> str:
    cfg = doc["config"]

    def tower(spec: dict[str, Any]) -> str:
        detail = spec.get("variant") or spec.get("model")
        return f"`{spec['name']}`" + (f" ({detail})" if detail else "")

    source = doc["meta"].get("source")
    origin = f"\nConverted from {source} ({doc['meta'].get('checkpoint', '')}).\n" if source else ""
    return (
        "---\nlibrary_name: soundsift\ntags:\n- audio\n- text-to-audio-retrieval\n"
        f"- language-based-audio-retrieval\n---\n{_CARD_MARK}\n# soundsift dual encoder\n\n"
        f"Language-based audio retrieval: audio tower {tower(cfg['audio_encoder'])} and text tower "
        f"{tower(cfg['text_encoder'])}, projected into a shared {cfg['embed_dim']}-d space (cosine "
        f"similarity). Saved by soundsift {doc['soundsift_version']}.\n{origin}\n## Use\n\n```python\n"
        "from soundsift.checkpoints import from_pretrained\n\nmodel = from_pretrained(\"DIRECTORY_OR_REPO_ID\")\n"
        "audio = model.embed_waveforms([waveform])  # mono float32 at model.sample_rate\n"
        'text = model.embed_texts(["a dog barks in the distance"])\nscores = audio @ text.T\n```\n\n'
        f"## Files\n\n- `{CONFIG_NAME}`: format tag, version, the model config and its temperature `tau`.\n"
        f"- `{WEIGHTS_NAME}`: trainable parameters; frozen pretrained towers are rebuilt from their source.\n"
    )


def save_pretrained(model: DualEncoder, directory: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` in Hugging Face Hub layout; a new directory appears whole (temp dir + rename).

    Into an existing directory each file is replaced atomically, weights first and ``config.json`` last;
    a ``README.md`` not written by soundsift is kept.
    """
    from safetensors.torch import save_file

    from soundsift.version import __version__

    directory = Path(directory).expanduser()
    config_json = json.dumps(model.config, sort_keys=True, default=_json_default)
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "soundsift_version": __version__,
           "library_name": "soundsift", "config": json.loads(config_json), "tau": float(model.tau), "meta": dict(meta or {})}
    json.dumps(doc["meta"], default=_json_default)  # fail before writing anything
    tensors = _unshared(model.trainable_state_dict())
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "config": config_json}
    writers = {
        WEIGHTS_NAME: lambda p: save_file(tensors, str(p), metadata=header),
        CARD_NAME: lambda p: p.write_text(_model_card(doc), encoding="utf-8"),
        CONFIG_NAME: lambda p: p.write_text(
            json.dumps(doc, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8"
        ),
    }
    if not directory.exists():
        try:
            return publish_dir(directory, lambda tmp: [write(tmp / name) for name, write in writers.items()])
        except OSError:
            if not directory.is_dir():  # not a race with another writer: a real error
                raise
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: exists and is not a directory")
    for name, write in writers.items():
        card = directory / name
        if name == CARD_NAME and card.is_file() and _CARD_MARK not in card.read_text(errors="replace"):
            continue
        atomic_write(directory / name, write)
    return directory


def read_pretrained_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``config.json`` written by ``save_pretrained``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path.parent}: no {CONFIG_NAME}; not a model directory written by save_pretrained")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not readable JSON ({exc})") from exc
    check_format(doc, path, FORMAT, FORMAT_VERSION, ModelFileError, "soundsift model config")
    if not isinstance(doc.get("config"), dict):
        raise ModelFileError(f"{path}: has no model 'config' object")
    return doc


def _hub_files(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download

    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            offline = {} if hub_reachable() else {"local_files_only": True}  # the cache only, no retries
            paths.append(Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, **offline)))
        except Exception as exc:  # offline, missing repo or file, HTTP errors: all mean "not available"
            raise ModelFileError(
                f"{repo_id}: no such local directory, and {name} could not be fetched from the Hugging Face "
                f"Hub ({type(exc).__name__}: {exc}). Offline? Download the repository and pass its folder."
            ) from exc
    return paths[0], paths[1]


def from_pretrained(
    directory_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> DualEncoder:
    """Load a model saved by ``save_pretrained`` from a directory or a Hub repo id (eval mode).

    ``model.identity`` is the sha256 of ``model.safetensors`` (which also holds the config).
    """
    from safetensors import safe_open

    source = str(directory_or_repo_id)
    local = Path(source).expanduser()
    if local.is_dir():
        config_path, weights_path = local / CONFIG_NAME, local / WEIGHTS_NAME
    elif _REPO_ID.fullmatch(source):
        config_path, weights_path = _hub_files(source, revision, cache_dir)
    else:
        raise ModelFileError(f"{source}: not a directory, nor a Hugging Face Hub repo id (owner/name)")
    doc = read_pretrained_config(config_path)
    if not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: missing; the model directory is incomplete")
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            header = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:
        raise ModelFileError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    if header.get("format") != FORMAT or "config" not in header:
        raise ModelFileError(f"{weights_path}: not written by soundsift (no '{FORMAT}' metadata)")
    if json.loads(header["config"]) != doc["config"]:
        raise ModelFileError(
            f"{config_path} and {weights_path.name} describe different models (an interrupted save, or an "
            "edited config.json?); save the model again"
        )
    return model_from_file(doc, state, config_path, weights_path).to(device).eval()
