"""Interoperability: the paper authors' salsa checkpoint, and Hugging Face Hub layout for soundsift models.

**salsa** (``OptimusPrimus/salsa``, the DCASE 2024 task 8 winner): ``load_salsa_checkpoint`` turns its
PyTorch Lightning checkpoint (PaSST ``passt_s_p16_s16_128_ap468`` + RoBERTa-large, ``passt_roberta.ckpt``)
into a ``DualEncoder`` for evaluation, search and fine-tuning. The checkpoint is read with
``torch.load(weights_only=True, mmap=True)`` (optimizer states are never read into memory); the Sacred
read-only containers in its hyperparameters are read as plain dicts/lists and any other Python object in
its metadata as an inert placeholder, so neither Sacred nor salsa's code is needed. Keys are renamed by
``SALSA_KEY_MAP``; keys that carry nothing the embeddings use are dropped only when they match
``SALSA_IGNORED`` (each with its reason); everything else must match the model exactly (names and shapes).

The salsa Lightning module (``experiments/ex_dcase24.py``, ``AudioRetrievalModel``) holds:

- ``audio_embedding_model.model.model.*``: PaSST (salsa's ``WindowedPrediction`` -> ``Wrapper`` -> the
  hear21passt ``PaSST``), timm ViT names: tokens, positional encodings, ``patch_embed.proj``,
  ``blocks.0-11.*``, ``norm``, plus the AudioSet classifiers ``head.{0,1}.*`` and ``head_dist.*``;
  its log-mel front end has only non-persistent buffers;
- ``sentence_embedding_model.*``: ``transformers.RobertaModel`` built with ``add_pooling_layer=False``
  (``embeddings.*``, ``encoder.layer.0-23.*``, no pooler);
- ``project_audio.0.*`` ``Linear(768, 1024)`` and ``project_sentence.0.*`` ``Linear(1024, 1024)``
  (``Sequential`` of one ``Linear`` when ``adopt_n_layers == 0``: soundsift's ``"linear"`` projection);
- ``tau``, ``timing_tau`` (loss temperatures, 0.05; ``tau`` becomes the model's ``tau``), ``audio_token``, ``posencode.{pe,w}`` (inputs of an
  optional transformer over snippet embeddings, unused when ``sequence_model.num_layers == 0``).

Captions: lower-cased, ``string.punctuation`` removed, at most 32 RoBERTa tokens, first (CLS) token of the
last hidden state; audio: mean of the final-norm CLS and distillation tokens of each 10-s snippet,
averaged over snippets; embeddings L2-normalised.

"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from soundsift.atomic import atomic_write
from soundsift.checkpoints.format import identity
from soundsift.config import merge
from soundsift.encoders.pretrained import (
    default_cache_dir,
    download_checkpoint,
    filename_from_url,
    load_state_dict_checked,
    map_keys,
)
from soundsift.errors import ChecksumError, DownloadError, ModelFileError, StateDictError, load_failure
from soundsift.model import DEFAULT_TAU, DualEncoder

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- salsa

SALSA_CHECKPOINT_FILENAME = "passt_roberta.ckpt"
#: Share page of the checkpoint, from salsa's README ("A checkpoint of the model is available here").
SALSA_CHECKPOINT_URL = "https://cloud.cp.jku.at/index.php/s/ZZkWXQ7f3aXRXYW"
#: Direct downloads of its five parts, concatenated in this order (salsa's scripts/download_checkpoint.sh).
SALSA_CHECKPOINT_PARTS = (
    "https://cloud.cp.jku.at/index.php/s/pMWRbJzXqFPPzgD/download/passt_roberta.1.ckpt",
    "https://cloud.cp.jku.at/index.php/s/aMDLmLTZH4jCHwq/download/passt_roberta.2.ckpt",
    "https://cloud.cp.jku.at/index.php/s/3kKiQJFk45R7S5k/download/passt_roberta.3.ckpt",
    "https://cloud.cp.jku.at/index.php/s/ijLwzPAQrqKRf5P/download/passt_roberta.4.ckpt",
    "https://cloud.cp.jku.at/index.php/s/Np4A5nobAkaSGpY/download/passt_roberta.5.ckpt",
)

#: sha256 of the joined checkpoint, once it has been seen from the official source (None: not pinned).
SALSA_CHECKPOINT_SHA256: str | None = None

#: salsa key -> DualEncoder key (regex, replacement); the first matching rule applies.
SALSA_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^audio_embedding_model\.model\.model\.", "audio.model."),  # PaSST, same timm ViT names
    (r"^sentence_embedding_model\.", "text.backbone."),  # transformers RobertaModel, no pooler
    (r"^project_audio\.0\.", "audio_proj."),  # Linear(768, 1024)
    (r"^project_sentence\.0\.", "text_proj."),  # Linear(1024, 1024)
)
#: salsa keys dropped on purpose, with the reason (regex, reason).
SALSA_IGNORED: tuple[tuple[str, str], ...] = (
    (r"^audio_embedding_model\.model\.model\.(head|head_dist)\.", "PaSST's AudioSet classifiers (unused)"),
    (r"^(tau|timing_tau)$", "loss temperatures (fixed 0.05; tau is kept as the model's tau), not part of the embeddings"),
    (r"^(audio_token|posencode\.(pe|w))$", "snippet sequence model inputs, unused without its layers"),
    (r"^audio_output_projection\.", "snippet sequence model input projection, unused without its layers"),
    (r"^sentence_embedding_model\.embeddings\.(position_ids|token_type_ids)$", "index buffers (old transformers)"),
    (r"^sentence_embedding_model\.pooler\.", "pooler head, unused with CLS pooling of the last hidden state"),
)
#: salsa keys that mean the checkpoint computes something a DualEncoder does not (regex, what).
SALSA_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    (r"^audio_sequence\.\d+\.", "a transformer over snippet embeddings (sequence_model.num_layers > 0)"),
    (r"^project_(audio|sentence)\.[1-9]\d*\.", "a multi-layer ReLU projection (adopt_n_layers > 0)"),
)
#: DualEncoder keys the checkpoint need not hold (transformers versions that persist index buffers).
_MODULE_ONLY = (re.compile(r"^text\.backbone\.embeddings\.(position_ids|token_type_ids)$"),)

#: The DualEncoder the published checkpoint loads into (salsa's default config with passt + roberta-large).
SALSA_CONFIG: dict[str, Any] = {
    "audio_encoder": {"name": "passt", "variant": "passt_s_p16_s16_128_ap468", "pretrained": False},
    "text_encoder": {"name": "hf", "model": "roberta-large", "pooling": "cls", "max_tokens": 32,
                     "random_init": True},
    "embed_dim": 1024,
    "audio_projection": "linear",
    "text_projection": "linear",
}
# salsa's models/audio/passt.py get_passt: "passt_s", "passt_l" name these; any other "passt*" is ap468.
_PASST_VARIANTS = {"passt_s": "passt_s_kd_p16_128_ap486", "passt_l": "passt_l_kd_p16_128_ap47"}
_SACRED = "sacred.config.custom_containers"
_STAND_INS: list[Any] = [(dict, f"{_SACRED}.ReadOnlyDict"), (list, f"{_SACRED}.ReadOnlyList"), argparse.Namespace]


class _Opaque:
    """Inert placeholder for a Python object in checkpoint metadata; never runs the original's code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass
class LightningCheckpoint:
    """The parts of a Lightning checkpoint a converter needs (tensors are memory-mapped when possible)."""

    state_dict: dict[str, torch.Tensor]
    hparams: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    global_step: int | None = None


def read_container(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with stand-ins for non-tensor metadata classes, mmap if possible."""
    try:
        unknown = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: torch.load reports it below
        unknown = set()
    known = {name for _, name in _STAND_INS[:2]} | {"argparse.Namespace"}
    extra = sorted(unknown - known)
    if extra:
        log.info("%s: metadata objects read as inert placeholders: %s", path, ", ".join(extra))
    with torch.serialization.safe_globals([*_STAND_INS, *[(_Opaque, name) for name in extra]]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def read_lightning_checkpoint(path: str | Path) -> LightningCheckpoint:
    """Read a Lightning checkpoint's state dict and hyperparameters (weights only, no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        obj = read_container(path)
    except Exception as exc:
        raise StateDictError(f"{path}: cannot be read with torch.load(weights_only=True) ({load_failure(exc)})") from exc
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        keys = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else type(obj).__name__
        raise StateDictError(f"{path}: not a Lightning checkpoint (no 'state_dict'; top level: {keys})")
    hparams = obj.get("hyper_parameters")
    return LightningCheckpoint(
        state_dict={k: v for k, v in state.items() if torch.is_tensor(v)},
        hparams=dict(hparams) if isinstance(hparams, Mapping) else {},
        epoch=obj.get("epoch") if isinstance(obj.get("epoch"), int) else None,
        global_step=obj.get("global_step") if isinstance(obj.get("global_step"), int) else None,
    )


def _hp(hparams: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    node: Any = hparams
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def salsa_tau(state_dict: Mapping[str, Any], hparams: Mapping[str, Any] | None = None) -> float:
    """The temperature a salsa checkpoint scores with: its ``tau`` parameter (salsa divides by its absolute
    value), else the ``initial_tau`` hyperparameter, else ``DEFAULT_TAU`` (salsa's fixed 0.05)."""
    value = state_dict.get("tau")
    if torch.is_tensor(value) and value.numel() == 1 and float(value.abs()) > 0:
        return float(value.abs())
    initial = _hp(hparams or {}, "initial_tau")
    return float(initial) if isinstance(initial, (int, float)) and not isinstance(initial, bool) and initial > 0 else DEFAULT_TAU


def salsa_config(hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DualEncoder config of a salsa checkpoint from its hyperparameters (``SALSA_CONFIG`` if absent).

    Raises ValueError for salsa settings a DualEncoder does not compute (non-PaSST audio models,
    overlapping snippets, a sequence model over snippets, multi-layer projections, no normalisation).
    """
    config = copy.deepcopy(SALSA_CONFIG)
    hp = hparams or {}
    audio_model = str(_hp(hp, "audio_features", "model", default="passt"))
    problems = []
    if not audio_model.startswith("passt") or audio_model == "passt_20":
        problems.append(f"audio model {audio_model!r} (only salsa's PaSST models convert)")
    segment = _hp(hp, "audio_features", "segment_length", default=10)
    if _hp(hp, "audio_features", "hop_length", default=segment) != segment:
        problems.append("overlapping snippets (hop_length != segment_length)")
    for tower in ("audio_features", "sentence_features"):
        if _hp(hp, tower, "adopt_n_layers", default=0):
            problems.append(f"{tower}.adopt_n_layers > 0 (multi-layer ReLU projection)")
    if _hp(hp, "audio_features", "sequence_model", "num_layers", default=0):
        problems.append("a transformer over snippet embeddings (sequence_model.num_layers > 0)")
    if not _hp(hp, "normalize", default=True):
        problems.append("normalize=False (unnormalised dot-product scores)")
    if problems:
        raise ModelFileError("salsa checkpoint uses what a soundsift DualEncoder does not compute: " + "; ".join(problems))
    audio = config["audio_encoder"]
    audio["variant"] = _PASST_VARIANTS.get(audio_model, audio["variant"])
    if float(segment) != 10.0:
        audio["segment_seconds"] = float(segment)
    text = config["text_encoder"]
    text["model"] = str(_hp(hp, "sentence_features", "model", default=text["model"]))
    text["max_tokens"] = int(_hp(hp, "sentence_features", "max_sentence_tokens", default=text["max_tokens"]))
    if not _hp(hp, "sentence_features", "use_first_token", default=True):
        text["pooling"] = "mean"
    config["embed_dim"] = int(_hp(hp, "shared_representation_size", default=config["embed_dim"]))
    return config


def convert_salsa_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str = "salsa checkpoint", strict: bool = True
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """Rename salsa keys to DualEncoder keys; returns ``(mapped, [(ignored key, reason), ...])``.

    Unknown keys are kept under their own name (so a checked load reports them as unexpected); keys of
    ``SALSA_UNSUPPORTED`` raise ``StateDictError`` naming what the checkpoint computes (a warning
    unless ``strict``).
    """
    unsupported = [(k, what) for k in state_dict for p, what in SALSA_UNSUPPORTED if re.search(p, k)]
    if unsupported:
        whats = sorted({what for _, what in unsupported})
        message = (
            f"{source}: uses {'; '.join(whats)}, which a soundsift DualEncoder does not compute "
            f"(keys: {', '.join(k for k, _ in unsupported[:6])})"
        )
        if strict:
            raise StateDictError(message)
        log.warning("%s; its embeddings will differ from salsa's", message)
    ignored, kept = [], {}
    for key, value in state_dict.items():
        reason = next((r for p, r in SALSA_IGNORED if re.search(p, key)), None)
        if reason is None:
            kept[key] = value
        else:
            ignored.append((key, reason))
    return map_keys(kept, SALSA_KEY_MAP), ignored


def download_salsa_checkpoint(
    cache_dir: str | Path | None = None, parts: Sequence[str] | None = None, progress: bool = True
) -> Path:
    """Download the published checkpoint's parts (default ``SALSA_CHECKPOINT_PARTS``; resumable, each
    kept in the cache until the joined file exists) and join them into ``passt_roberta.ckpt``. No
    checksum is published: the joined file's sha256 is logged (``SALSA_CHECKPOINT_SHA256`` pins it)."""
    parts = SALSA_CHECKPOINT_PARTS if parts is None else parts
    target_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = target_dir / SALSA_CHECKPOINT_FILENAME
    if target.is_file():
        return target
    files = []
    for url in parts:
        try:
            files.append(download_checkpoint(url, cache_dir=target_dir, progress=progress, hint=""))
        except DownloadError as exc:
            raise type(exc)(f"{exc}. {parts_hint(target_dir, parts)}") from exc

    def join(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            for part in files:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)

    atomic_write(target, join)
    digest = identity(target)
    if SALSA_CHECKPOINT_SHA256 and digest != SALSA_CHECKPOINT_SHA256:
        target.unlink()
        raise ChecksumError(f"{target}: sha256 {digest}, expected {SALSA_CHECKPOINT_SHA256}; the parts were kept, "
                            "delete them in the cache to download them again")
    log.info("joined %s (sha256 %s)", target, digest)
    for part in files:
        part.unlink(missing_ok=True)
    return target


def parts_hint(cache_dir: Path, parts: Sequence[str]) -> str:
    """What to do when the published checkpoint cannot be downloaded here: its parts into the cache, or
    the joined file named wherever ``salsa`` was (``--model``, ``init_from``, ``load_model``)."""
    names = [filename_from_url(url) for url in parts]
    missing = [name for name in names if not (cache_dir / name).is_file()]
    joined = SALSA_CHECKPOINT_FILENAME
    return (f"The published salsa model comes in {len(names)} parts ({', '.join(names)}; "
            f"{SALSA_CHECKPOINT_URL}): download {'them' if len(missing) == len(names) else ', '.join(missing)} "
            f"elsewhere (a browser may be needed) into {cache_dir}, where they are joined on first use; or join "
            f"them in order yourself (cat {' '.join(names)} > {joined}) and name that file instead of 'salsa' "
            f"(--model {joined}; in a training config init_from={joined})")


def _check_tokenizer(model: DualEncoder, mapped: Mapping[str, torch.Tensor], source: str) -> None:
    rows = mapped.get("text.backbone.embeddings.word_embeddings.weight")
    tokenizer = getattr(model.text, "tokenizer", None)
    if rows is None or tokenizer is None or len(tokenizer) == rows.shape[0]:
        return
    name = model.config["text_encoder"].get("model")
    raise ModelFileError(
        f"{source}: the text tower's tokenizer has {len(tokenizer)} tokens but the checkpoint's "
        f"{name} embeddings have {rows.shape[0]} rows: {name}'s own tokenizer could not be loaded "
        "(offline?). Run once with Hub access, or pass overrides={'text_encoder': {'model': FOLDER}} "
        f"with a folder holding {name}'s tokenizer and config.json (no weights needed)."
    )


def load_salsa_checkpoint(
    path_or_url: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    strict: bool = True,
    overrides: Mapping[str, Any] | None = None,
    check_tokenizer: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> DualEncoder:
    """Load salsa's Lightning checkpoint into a DualEncoder (eval mode).

    ``path_or_url``: a local file, a URL, or None for the published checkpoint (downloaded into the
    cache). ``overrides`` are merged into the derived config (e.g. ``{"text_encoder": {"model": DIR}}``).
    ``strict``: refuse any key or shape mismatch (otherwise load what fits and log the rest).
    ``check_tokenizer``: refuse a tokenizer whose vocabulary does not match the checkpoint's embeddings.
    """
    if path_or_url is None:
        path = download_salsa_checkpoint(cache_dir, progress=progress)
    elif re.match(r"^https?://", str(path_or_url)):
        path = download_checkpoint(str(path_or_url), cache_dir=cache_dir, progress=progress,
                                   hint=". Download it elsewhere (a browser may be needed), then pass its path instead")
    else:
        path = Path(path_or_url).expanduser()
    ckpt = read_lightning_checkpoint(path)
    source = f"{path} (salsa checkpoint, keys renamed by SALSA_KEY_MAP)"
    mapped, ignored = convert_salsa_state_dict(ckpt.state_dict, source=str(path), strict=strict)
    model = DualEncoder.from_config(merge(salsa_config(ckpt.hparams), overrides or {}, whole=lambda key: False),
                                    tau=salsa_tau(ckpt.state_dict, ckpt.hparams))
    if check_tokenizer:
        _check_tokenizer(model, mapped, str(path))
    report = load_state_dict_checked(model, mapped, ignore_missing=_MODULE_ONLY, strict=strict, source=source)
    report.ignored_unexpected.extend(key for key, _ in ignored)
    for reason in sorted({r for _, r in ignored}):
        log.info("%s: ignored %s: %s", path, reason, ", ".join(k for k, r in ignored if r == reason))
    model.identity = identity(path)
    model.meta = {
        "source": "OptimusPrimus/salsa",
        "checkpoint": str(path),
        "epoch": ckpt.epoch,
        "global_step": ckpt.global_step,
        "ignored_keys": [key for key, _ in ignored],
    }
    model.load_report = report
    return model.to(device).eval()
