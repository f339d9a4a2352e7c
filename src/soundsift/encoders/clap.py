"""LAION-CLAP (transformers' ``ClapModel``) as a soundsift audio tower and text tower.

Each tower is CLAP's own encoder followed by its own projection, returning CLAP's L2-normalised joint
embedding, so a ``DualEncoder`` with identity projections (``laion_clap_model``, the published
``"laion-clap"``) reproduces ``ClapModel.get_audio_features`` / ``get_text_features``.

Audio runs through the checkpoint's ``ClapFeatureExtractor`` as CLAP's processor runs it (48 kHz, 64
mel bins, its ``padding``: repeat-pad for ``laion/clap-htsat-unfused``). A clip of up to 10 s is
exactly what CLAP embeds. CLAP itself embeds a longer clip from a random 10-s crop (``rand_trunc``,
the unfused checkpoint) or from three random crops fused with the whole (``fusion``). soundsift never
takes a random crop: a longer clip is cut into consecutive 10-s windows (a last piece under 2.5 s is
dropped, a longer one is repeat-padded like a short clip) and the clip's embedding is the mean of the
windows' unit embeddings. Each window is at most 10 s, so the extractor never crops, and fusion models
get their global branch only (``is_longer`` False, as CLAP treats clips of up to 10 s).

Weights come from the Hugging Face Hub (``laion/clap-htsat-unfused`` by default: downloaded once,
resumably, into the Hugging Face cache, files checked against the hub's etags) or from a local folder
in the hub layout (``model: FOLDER``). Frozen towers (the default) are rebuilt from that source when a
model file loads (``frozen_pretrained``), so a model file holds only what was trained. ``tiny=True``
builds small random towers for tests, with no download.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soundsift.encoders.frontends.hf_features import ClapFeatures
from soundsift.encoders.hf_audio import (
    TINY_CLAP,
    TINY_CLAP_FEATURES,
    _from_pretrained,
    _set_trainable,
    _WindowedHFEncoder,
    not_longer,
)
from soundsift.encoders.options import CLAP_MAX_TOKENS, CLAP_MODEL, LaionClapAudioCfg, LaionClapTextCfg
from soundsift.encoders.text import (
    _SHARED_CACHES,
    HFTextEncoder,
    _clear_cache_after_load,
    _quiet_transformers,
)
from soundsift.errors import ConfigError, WeightsUnavailableError

#: The published checkpoint: HTS-AT (tiny, no fusion) + RoBERTa-base, 512-d joint space.
DEFAULT_MODEL = CLAP_MODEL
#: LAION-CLAP tokenises captions to at most 77 tokens (``CLAP_Module.tokenizer``).
MAX_TOKENS = CLAP_MAX_TOKENS

TINY_TEXT = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=80, projection_hidden_size=32, projection_dim=24)

#: Files a hub snapshot needs for both towers (one of each tuple).
_NEEDED = (("config.json",), ("preprocessor_config.json",), ("model.safetensors", "pytorch_model.bin"),
           ("tokenizer.json", "vocab.json"))


def tiny_tokenizer(words: tuple[str, ...] = ("the", "dog", "sound")):
    """A byte-level RoBERTa tokenizer (RoBERTa's special tokens, the 256 byte symbols, and merges that
    spell ``words`` with and without a leading space): small, offline, for tiny models and tests."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        for spelled in ("\u0120" + word, word):  # "Ġ" marks a leading space in byte-level BPE
            token = spelled[0]
            for char in spelled[1:]:
                if token + char not in vocab:
                    merges.append((token, char))
                    vocab[token + char] = len(vocab)
                token += char
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges)


def _load_kwargs(revision: str | None, cache_dir: str | Path | None, local_files_only: bool | None,
                 pretrained: bool = True) -> dict[str, Any]:
    """``from_pretrained`` arguments; random weights (``pretrained=False``) look offline unless told not to."""
    offline = (not pretrained) if local_files_only is None else bool(local_files_only)
    kwargs: dict[str, Any] = {"local_files_only": offline}
    if revision:
        kwargs["revision"] = revision
    if cache_dir:
        kwargs["cache_dir"] = str(cache_dir)
    return kwargs


def _random_or_pretrained(model_cls: Any, config_cls: Any, source: str | Path, pretrained: bool, seed: int,
                          kwargs: dict[str, Any]) -> nn.Module:
    """A CLAP tower with the checkpoint's weights, or (``pretrained=False``) seeded random weights in its
    architecture: only its ``config.json`` is read."""
    if pretrained:
        return _from_pretrained(model_cls, source, **kwargs)
    config = _from_pretrained(config_cls, source, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config)


class LaionClapAudioEncoder(_WindowedHFEncoder):
    """CLAP's audio tower + ``audio_projection``: waveform (B, T) at 48 kHz -> (B, 512) joint embeddings.

    Args:
        model: hub id or local folder (hub layout) of a CLAP checkpoint.
        revision: a hub revision (branch, tag or commit) to pin.
        freeze: no gradients, eval mode, and rebuilt from ``model`` when a model file loads (default).
        trainable: with ``freeze=False``, train only the last k Swin stages (+ norm, projection); None: all.
        tiny: a small random tower (16 kHz, 2-s windows) for tests; no download.
        pretrained: False gives random weights in the checkpoint's architecture (its config and
            extractor from the local folder or cache); nothing is downloaded.
        seed: seed of the ``tiny`` or random weights.
        input_sample_rate: rate of the waveforms you pass, if not the model's (resampled with soxr).
        cache_dir, local_files_only: passed to ``from_pretrained``.
    """

    Options = LaionClapAudioCfg

    def __init__(self, model: str | Path = DEFAULT_MODEL, revision: str | None = None, freeze: bool = True,
                 trainable: int | None = None, tiny: bool = False, seed: int = 0,
                 input_sample_rate: int | None = None, cache_dir: str | Path | None = None,
                 local_files_only: bool | None = None, pretrained: bool = True):
        super().__init__(input_sample_rate)
        from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

        if tiny:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = ClapAudioModelWithProjection(ClapAudioConfig(**TINY_CLAP))
            features = {**TINY_CLAP_FEATURES, "feature_size": TINY_CLAP["num_mel_bins"]}
            self.features = ClapFeatureExtractor(**features, truncation="rand_trunc", padding="repeatpad")
        else:
            kwargs = _load_kwargs(revision, cache_dir, local_files_only, pretrained)
            with _quiet_transformers():
                self.model = _random_or_pretrained(ClapAudioModelWithProjection, ClapAudioConfig, model, pretrained,
                                                   seed, kwargs)
                self.features = _from_pretrained(ClapFeatureExtractor, model, **kwargs)
        config = self.model.config
        # the extractor's mel filters follow the truncation mode the model was trained with
        self.truncation = "fusion" if getattr(config, "enable_fusion", False) else "rand_trunc"
        self.padding = self.features.padding if self.features.padding in ("repeatpad", "repeat", "pad") else "repeatpad"
        self.model_rate = int(self.features.sampling_rate)
        self.window_samples = int(self.features.nb_max_samples)
        self.min_samples = int(self.features.fft_window_size)
        self.out_dim = int(config.projection_dim)
        self.freeze = bool(freeze)
        encoder = self.model.audio_model.audio_encoder
        if self.freeze:
            self.model.requires_grad_(False)
            self.model.eval()
            self.model.frozen_pretrained = pretrained and not tiny  # rebuilt from its source on load, never saved
        else:
            _set_trainable(self.model, encoder.layers, trainable, [self.model.audio_projection, encoder.norm])

    def train(self, mode: bool = True) -> LaionClapAudioEncoder:
        super().train(mode)
        if self.freeze:
            self.model.eval()  # frozen: batch norm keeps its statistics, no dropout
        return self

    def features_of(self, windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The extractor's ``input_features`` (and ``is_longer``, all False) for windows of at most 10 s."""
        feats = self.features(windows, sampling_rate=self.model_rate, return_tensors="pt",
                              truncation=self.truncation, padding=self.padding)
        # windows never exceed max_length_s: no crop was taken, and no window is "longer" (the extractor
        # flags a random one in fusion mode when none is; CLAP's own rule for short clips is "not longer")
        return {"input_features": feats["input_features"], "is_longer": torch.zeros_like(feats["is_longer"])}

    def _embed(self, windows: list[np.ndarray], device: torch.device) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self.embed_features(self.features_of(windows)["input_features"].to(device))

    def feature_module(self) -> nn.Module:
        return ClapFeatures(self.features, self.truncation, self.padding, self.min_samples)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Features of windows (all four fusion channels, or the first alone: with no window "longer", a
        fusion model reads only the first) -> unit embeddings."""
        return F.normalize(self.model(input_features=features, is_longer=not_longer(features)).audio_embeds, dim=-1)


class LaionClapTextEncoder(HFTextEncoder):
    """CLAP's text tower (RoBERTa) + its pooler and ``text_projection``: captions -> (B, 512) joint embeddings.

    Captions are tokenised by the checkpoint's tokenizer as CLAP's are (no lower-casing or punctuation
    removal by default, at most ``max_tokens`` tokens). Frozen (the default), embeddings are cached per
    caption like ``HFTextEncoder``'s.

    Args:
        model, revision, cache_dir, local_files_only: as for ``LaionClapAudioEncoder``.
        max_tokens: longest token sequence (77, as LAION-CLAP).
        lowercase, strip_punctuation: caption normalisation (off: CLAP was trained on raw captions).
        freeze: no gradients, eval mode, rebuilt from ``model`` on load (default).
        trainable: with ``freeze=False``, train only the last k layers (+ pooler, projection); None: all.
        cache: keep the embeddings of a frozen tower per caption.
        tiny: a small random tower with a byte-level tokenizer, for tests; no download.
        pretrained: False gives random weights in the checkpoint's architecture (config and tokenizer
            from the local folder or cache); nothing is downloaded.
    """

    Options = LaionClapTextCfg

    def __init__(self, model: str | Path = DEFAULT_MODEL, revision: str | None = None, max_tokens: int = MAX_TOKENS,
                 lowercase: bool = False, strip_punctuation: bool = False, freeze: bool = True,
                 trainable: int | None = None, cache: bool = True, tiny: bool = False, seed: int = 0,
                 cache_dir: str | Path | None = None, local_files_only: bool | None = None,
                 pretrained: bool = True):
        nn.Module.__init__(self)  # HFTextEncoder's own __init__ loads an AutoModel; only its caption logic is shared
        from transformers import AutoTokenizer, ClapTextConfig, ClapTextModelWithProjection

        if int(max_tokens) < 2:
            raise ConfigError(f"laion-clap: max_tokens must be >= 2, got {max_tokens}")
        self.model_name, self.pooling, self.max_tokens = str(model), "pooler", int(max_tokens)
        self.lowercase, self.strip_punctuation = bool(lowercase), bool(strip_punctuation)
        self.freeze, self.use_cache = bool(freeze), bool(cache)
        if tiny:
            self.tokenizer = tiny_tokenizer()
            with _quiet_transformers(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.backbone = ClapTextModelWithProjection(ClapTextConfig(**TINY_TEXT))
        else:
            kwargs = _load_kwargs(revision, cache_dir, local_files_only, pretrained)
            with _quiet_transformers():
                self.tokenizer = _from_pretrained(AutoTokenizer, model, **kwargs)
                self.backbone = _random_or_pretrained(ClapTextModelWithProjection, ClapTextConfig, model, pretrained,
                                                      seed, kwargs)
        limit = int(self.backbone.config.max_position_embeddings) - 2  # RoBERTa positions start after padding
        self.max_tokens = min(self.max_tokens, limit)
        self.out_dim = int(self.backbone.config.projection_dim)
        text = self.backbone.text_model
        if self.freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
            self.backbone.frozen_pretrained = pretrained and not tiny
        else:
            heads = [self.backbone.text_projection] + ([text.pooler] if text.pooler is not None else [])
            _set_trainable(self.backbone, text.encoder.layer, trainable, heads)
        key = ("laion-clap", str(model), revision, self.max_tokens, self.lowercase, self.strip_punctuation)
        self._cache: dict[str, torch.Tensor] = (
            _SHARED_CACHES.setdefault(key, {}) if self.freeze and pretrained and not tiny else {})
        self.register_load_state_dict_post_hook(_clear_cache_after_load)

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(out.text_embeds, dim=-1)


# ------------------------------------------------------------------------------------------------
# The published model


def laion_clap_config(model: str | Path = DEFAULT_MODEL, revision: str | None = None,
                      projection_dim: int | None = None) -> dict[str, Any]:
    """The DualEncoder config of a CLAP checkpoint: both towers, identity projections into its joint space.

    ``projection_dim`` is read from the checkpoint's config when not given (a small download)."""
    source = str(model)
    if projection_dim is None:
        from transformers import ClapConfig

        with _quiet_transformers():
            projection_dim = int(_from_pretrained(ClapConfig, source, **_load_kwargs(revision, None, False)).projection_dim)
    tower = {"model": source} if revision is None else {"model": source, "revision": revision}
    return {
        "audio_encoder": {"name": "laion-clap", **tower},
        "text_encoder": {"name": "laion-clap", **tower},
        "embed_dim": int(projection_dim),
        "audio_projection": "identity",
        "text_projection": "identity",
    }


def _weights_files(source: str, revision: str | None) -> list[Path]:
    local = Path(source).expanduser()
    if local.is_dir():
        found = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
        return [p for p in found if p.is_file()]
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(source, name, revision=revision)
        if isinstance(hit, str):
            return [Path(hit)]
    return []


def _file_tag(path: Path) -> str:
    """The hub's etag of a cached file (its blob's name: the sha256 of an LFS file), else its sha256."""
    real = path.resolve()
    if real.parent.name == "blobs":
        return real.name
    from soundsift.downloader import file_digest

    return file_digest(real)


def laion_clap_identity(config: dict[str, Any], source: str, revision: str | None = None) -> str:
    """A stable identity (sha256) of an untrained CLAP model: its config without where the weights come
    from, and the sha256 of its weights; a hub download and a local copy of it are the same model."""
    tags = [_file_tag(p) for p in _weights_files(source, revision)]
    where = ("model", "revision", "cache_dir", "local_files_only")
    towers = {key: {k: v for k, v in config[key].items() if k not in where} for key in ("audio_encoder", "text_encoder")}
    text = json.dumps({**config, **towers}, sort_keys=True, default=str)
    return hashlib.sha256(f"soundsift laion-clap {text} {' '.join(tags)}".encode()).hexdigest()


def laion_clap_tau(source: str, revision: str | None = None) -> float | None:
    """The temperature of a CLAP checkpoint, ``1 / exp(logit_scale_a)`` (its audio-side logit scale), read
    from its weights file; None when the weights hold none."""
    for path in _weights_files(source, revision):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                scale = f.get_tensor("logit_scale_a") if "logit_scale_a" in f.keys() else None
        else:
            scale = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("logit_scale_a")
        if scale is not None:
            return float(torch.exp(-scale.double().reshape(-1)[0]))
    return None


def is_cached(model: str = DEFAULT_MODEL, revision: str | None = None) -> bool:
    """Whether a hub CLAP checkpoint is complete in the local Hugging Face cache (loads offline)."""
    if Path(model).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return all(any(isinstance(try_to_load_from_cache(model, name, revision=revision), str) for name in names)
               for names in _NEEDED)


def laion_clap_model(build: Callable[[dict[str, Any]], nn.Module], device: str | torch.device = "cpu",
                     model: str | Path | None = None, revision: str | None = None):
    """The published ``"laion-clap"`` model (or the CLAP checkpoint ``model``: hub id or local folder) as a
    DualEncoder built by ``build`` (``DualEncoder.from_config``; the model class sits above encoders), with
    its identity and temperature (``laion_clap_tau``) set, in eval mode on ``device``. An unreachable download is one ``WeightsUnavailableError``
    saying how to use a local folder instead."""
    source = str(model or DEFAULT_MODEL)
    try:
        config = laion_clap_config(source, revision)
        dual = build(copy.deepcopy(config))
    except WeightsUnavailableError as exc:
        if Path(source).expanduser().is_dir():
            raise WeightsUnavailableError(f"laion-clap: {source} is not a complete CLAP folder (config.json, "
                                          f"weights, preprocessor_config.json, tokenizer files): {exc}") from exc
        error = WeightsUnavailableError(
            f"laion-clap: cannot get {source} from the Hugging Face Hub (offline, or not in the local cache). "
            f"Download it where there is a network (huggingface-cli download {source} --local-dir FOLDER), copy "
            "FOLDER here and pass --model FOLDER (in a config: model.audio_encoder.model and "
            "model.text_encoder.model)")
        error.option = "model"
        raise error from exc
    dual.identity = laion_clap_identity(config, source, revision)
    tau = laion_clap_tau(source, revision)
    if tau is not None:
        dual.tau = tau
    dual.meta = {"published": "laion-clap", "source": source}
    return dual.to(device).eval()


def is_clap_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a transformers CLAP checkpoint (``config.json`` of type clap)."""
    config = Path(path).expanduser() / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "clap"
    except (OSError, ValueError, AttributeError):
        return False
