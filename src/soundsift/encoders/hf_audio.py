"""Audio towers from ``transformers``: AST (Audio Spectrogram Transformer) and CLAP's HTS-AT audio encoder.

Both run their own feature extractor (numpy, no gradient to the waveform) on fixed-length windows: a clip
longer than the model's window is cut into consecutive windows whose embeddings are averaged, so no
random crop is ever taken and inference is deterministic. Pretrained weights come from the Hugging Face
hub (or a local folder); ``pretrained=False`` builds a small random model from a config without any
download (tests, smoke runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from soundsift.downloader import hub_reachable
from soundsift.encoders.base import AudioEncoder
from soundsift.encoders.export_plan import AudioExportPlan, Call
from soundsift.encoders.frontends.hf_features import AstFeatures, ClapFeatures
from soundsift.encoders.layers import average_by_owner
from soundsift.encoders.options import CLAP_MODEL, AstCfg, ClapAudioCfg
from soundsift.errors import ConfigError, WeightsUnavailableError

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_length=128, num_mel_bins=32)
TINY_CLAP = dict(spec_size=64, window_size=4, num_mel_bins=16, patch_size=4, patch_stride=(4, 4),
                 depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32, projection_dim=24,
                 patch_embeds_hidden_size=16, projection_hidden_size=32)
# feature extractor of the tiny CLAP: 16 kHz, 10-ms hop, 2-s windows (201 frames <= spec_size * 4)
TINY_CLAP_FEATURES = dict(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=2,
                          fft_window_size=400, frequency_max=8000)


def _from_pretrained(cls: Any, name: str | Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained``; offline it looks in the local cache only (no minute of retries)."""
    offline = not Path(name).is_dir() and not kwargs.get("local_files_only") and not hub_reachable()
    if offline:
        kwargs["local_files_only"] = True
    try:
        return cls.from_pretrained(str(name), **kwargs)
    except OSError as exc:
        why = "the Hugging Face Hub cannot be reached (offline?) and it is not in the local cache" if offline else exc
        error = WeightsUnavailableError(
            f"cannot load {cls.__name__} from {name!r}: {why}. Download the model elsewhere into a local "
            "folder (config, weights, preprocessor_config.json) and pass model=FOLDER")
        error.option = "model"
        raise error from exc


def _set_trainable(model: nn.Module, blocks: Sequence[nn.Module], last_k: int | None,
                   heads: Sequence[nn.Module] = ()) -> None:
    """Train everything (None), or only the last ``last_k`` of ``blocks`` plus ``heads`` (0: heads only)."""
    model.requires_grad_(last_k is None)
    if last_k is None:
        return
    for block in list(blocks)[len(blocks) - max(0, min(int(last_k), len(blocks))):]:
        block.requires_grad_(True)
    for head in heads:
        head.requires_grad_(True)


class _PiecesCore(nn.Module):
    """The exported core of a windowed tower: fixed-size pieces and their real samples -> features (the
    extractor in torch) -> window embeddings (the tower's ``embed_features``)."""

    def __init__(self, features: nn.Module, embed: nn.Module) -> None:
        super().__init__()
        self.features, self.embed = features, embed

    def forward(self, pieces: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(pieces, valid))


def not_longer(features: torch.Tensor) -> torch.Tensor:
    """CLAP's ``is_longer`` for windows of at most 10 s: all False (no fusion crops are taken)."""
    return torch.zeros(features.shape[0], 1, dtype=torch.bool, device=features.device)


class _WindowedHFEncoder(AudioEncoder):
    """Shared machinery: cut clips into windows, extract features, embed windows, average per clip."""

    model_rate: int
    window_samples: int
    min_samples: int
    #: windows are cut per clip from its real samples and padded to a fixed size by the extractor
    batch_invariant = True

    def __init__(self, input_sample_rate: int | None):
        super().__init__()
        self.input_sample_rate = input_sample_rate

    @property
    def sample_rate(self) -> int:
        return int(self.input_sample_rate or self.model_rate)

    def _windows(self, waveform: torch.Tensor, lengths: torch.Tensor | None) -> tuple[list[np.ndarray], list[int]]:
        if waveform.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects waveforms shaped (batch, samples), "
                             f"got {tuple(waveform.shape)}")
        wav = waveform.detach().float().cpu().numpy()
        lens = [wav.shape[1]] * wav.shape[0] if lengths is None else [int(n) for n in lengths.tolist()]
        windows, owner = [], []
        for i, (clip, n) in enumerate(zip(wav, lens)):
            clip = clip[:max(n, 1)]
            if self.sample_rate != self.model_rate:
                import soxr

                clip = soxr.resample(clip, self.sample_rate, self.model_rate).astype(np.float32)
            step = self.window_samples
            starts = range(0, max(len(clip), 1), step)
            for start in starts:
                piece = clip[start:start + step]
                # a short tail (under a quarter window) would mostly be padding: drop it unless it is all
                if start and len(piece) < step // 4:
                    continue
                if len(piece) < self.min_samples:  # the extractors need at least one analysis frame
                    piece = np.pad(piece, (0, self.min_samples - len(piece)))
                windows.append(piece)
                owner.append(i)
        return windows, owner

    def _embed(self, windows: list[np.ndarray], device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def feature_module(self) -> nn.Module:
        """The feature extractor re-implemented in torch (``frontends.hf_features``): ``(pieces (N, W),
        valid (N,))`` -> what ``embed_features`` takes; it exports to ONNX."""
        raise NotImplementedError

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """The extractor's features of windows -> the windows' embeddings."""
        raise NotImplementedError

    def export_plan(self) -> AudioExportPlan:
        """Windows of ``window_samples`` (a last one under a quarter window dropped, as ``_windows``) cut
        beside the graph, after resampling to ``model_rate`` when the input rate differs; the core graph
        is the extractor in torch and the network; the windows' embeddings are averaged per clip."""
        core = _PiecesCore(self.feature_module(), Call(self, "embed_features"))
        return AudioExportPlan(core=core, split="snippets", window=self.window_samples,
                               min_remainder=self.window_samples // 4, takes_valid=True,
                               model_rate=self.model_rate if self.sample_rate != self.model_rate else 0)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        windows, owner = self._windows(waveform, lengths)
        device = next(self.parameters()).device
        emb = self._embed(windows, device)
        return average_by_owner(emb, torch.tensor(owner, device=device), waveform.shape[0])


class ASTEncoder(_WindowedHFEncoder):
    """AST (``ASTModel`` + ``ASTFeatureExtractor``): 16 kHz, 128 Kaldi fbanks, 10.24-s windows, 768-d.

    Args:
        model: hub id or local folder of a pretrained AST.
        pretrained: False builds a random model from ``config`` (default: a tiny config); no download.
        config: ``ASTConfig`` keyword arguments for ``pretrained=False``.
        pooling: ``"pooler"`` (mean of the CLS and distillation tokens, AST's own), ``"cls"`` or ``"mean"``.
        trainable: train only the last k transformer layers (+ final layer norm); None trains all.
        input_sample_rate: rate of the waveforms you pass, if not 16 kHz (resampled with soxr).
        cache_dir, local_files_only: passed to ``from_pretrained``.
    """

    Options = AstCfg

    def __init__(self, model: str | Path = "MIT/ast-finetuned-audioset-10-10-0.4593", pretrained: bool = True,
                 config: dict | None = None, pooling: str = "pooler", trainable: int | None = None,
                 input_sample_rate: int | None = None, cache_dir: str | Path | None = None,
                 local_files_only: bool | None = None):
        super().__init__(input_sample_rate)
        from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

        if pooling not in ("pooler", "cls", "mean"):
            raise ConfigError(f"pooling must be 'pooler', 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        if not pretrained:
            cfg = ASTConfig(**(TINY_AST if config is None else config))
            self.model = ASTModel(cfg)
            self.features = ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length)
        else:
            kwargs = dict(cache_dir=cache_dir, local_files_only=bool(local_files_only))
            self.model = _from_pretrained(ASTModel, model, **kwargs)
            self.features = _from_pretrained(ASTFeatureExtractor, model, **kwargs)
        self.model_rate = int(self.features.sampling_rate)
        # the fbank uses a 25-ms frame and a 10-ms shift: max_length frames span this many samples
        self.window_samples = int(round(self.model_rate * (0.010 * (self.features.max_length - 1) + 0.025)))
        self.min_samples = int(round(self.model_rate * 0.025))
        self.out_dim = int(self.model.config.hidden_size)
        _set_trainable(self.model, self.layers, trainable, [self.model.layernorm])

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers (``model.layers`` in transformers 5, ``model.encoder.layer`` before)."""
        return self.model.layers if hasattr(self.model, "layers") else self.model.encoder.layer

    def feature_module(self) -> nn.Module:
        return AstFeatures(self.features, self.window_samples, self.min_samples)

    def _embed(self, windows: list[np.ndarray], device: torch.device) -> torch.Tensor:
        feats = self.features(windows, sampling_rate=self.model_rate, return_tensors="pt")
        return self.embed_features(feats["input_values"].to(device))

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        out = self.model(input_values=features)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        return hidden[:, 0] if self.pooling == "cls" else hidden[:, 2:].mean(1)


class CLAPAudioEncoder(_WindowedHFEncoder):
    """CLAP's audio tower (``ClapAudioModelWithProjection``): 48 kHz, 10-s windows, 512-d joint space.

    The embedding is the projected audio embedding (not normalised), i.e. ``ClapModel.get_audio_features``.
    Windows shorter than 10 s are repeat-padded as CLAP does (``padding="repeatpad"``); longer clips are
    averaged over consecutive windows, never randomly cropped.

    Args:
        model: hub id or local folder of a CLAP checkpoint (the full ``ClapModel`` checkpoint is fine).
        pretrained: False builds a random tiny model (``config`` overrides ``ClapAudioConfig`` arguments;
            the tiny feature extractor runs at 16 kHz with 2-s windows); no download.
        trainable: train only the last k Swin stages (+ projection); None trains all.
        input_sample_rate: rate of the waveforms you pass, if not the model's (resampled with soxr).
    """

    Options = ClapAudioCfg

    def __init__(self, model: str | Path = CLAP_MODEL, pretrained: bool = True,
                 config: dict | None = None, trainable: int | None = None,
                 input_sample_rate: int | None = None, cache_dir: str | Path | None = None,
                 local_files_only: bool | None = None):
        super().__init__(input_sample_rate)
        from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

        if not pretrained:
            self.model = ClapAudioModelWithProjection(ClapAudioConfig(**(TINY_CLAP if config is None else config)))
            n_mels = self.model.config.num_mel_bins
            self.features = ClapFeatureExtractor(**{**TINY_CLAP_FEATURES, "feature_size": n_mels})
        else:
            kwargs = dict(cache_dir=cache_dir, local_files_only=bool(local_files_only))
            self.model = _from_pretrained(ClapAudioModelWithProjection, model, **kwargs)
            self.features = _from_pretrained(ClapFeatureExtractor, model, **kwargs)
        self.fusion = bool(getattr(self.model.config, "enable_fusion", False))
        self.model_rate = int(self.features.sampling_rate)
        self.window_samples = int(self.features.nb_max_samples)
        self.min_samples = int(self.features.fft_window_size)
        self.out_dim = int(self.model.config.projection_dim)
        _set_trainable(self.model, self.model.audio_model.audio_encoder.layers, trainable,
                       [self.model.audio_projection, self.model.audio_model.audio_encoder.norm])

    def _embed(self, windows: list[np.ndarray], device: torch.device) -> torch.Tensor:
        # windows never exceed max_length_s, so neither truncation mode takes a random crop
        feats = self.features(windows, sampling_rate=self.model_rate, return_tensors="pt",
                              truncation="fusion" if self.fusion else "rand_trunc", padding="repeatpad")
        # the extractor flags a random window as "longer" in fusion mode: embed_features says none is
        return self.embed_features(feats["input_features"].to(device))

    def feature_module(self) -> nn.Module:
        return ClapFeatures(self.features, "fusion" if self.fusion else "rand_trunc", "repeatpad", self.min_samples)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(input_features=features, is_longer=not_longer(features)).audio_embeds
