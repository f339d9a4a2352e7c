"""DualEncoder: an audio tower and a text tower projected into one L2-normalised space.

Files are ``soundsift.checkpoints``' business (``save_model``, ``load_model``); the model only says which
of its parameters are worth saving (``trainable_state_dict``: frozen pretrained sub-modules, those with
``frozen_pretrained = True``, are rebuilt from their source).

A model is complete on its own: besides its weights it holds ``tau``, the temperature its similarities
were trained with (what turns them into probabilities: tagging, ensembles), ``identity`` (set by whoever
loads it from a file: the sha256 that indexes and teacher files record) and ``meta``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from soundsift.data.dataset import length_grouped_batches
from soundsift.encoders import build_audio_encoder, build_text_encoder
from soundsift.errors import ConfigError, DownloadError, ModelFileError
from soundsift.spans import files_then_windows, patch_ranges

#: The similarity temperature of the paper (DESIGN.md section 1), and of model files that do not record one.
DEFAULT_TAU = 0.05


def _projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    if kind == "identity":  # a linear map that starts as the identity: an untrained shared space works
        if in_dim != out_dim:
            raise ConfigError(f"projection 'identity' needs embed_dim equal to the encoder's {in_dim}, got {out_dim}")
        layer = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(out_dim))
            layer.bias.zero_()
        return layer
    raise ConfigError(f"unknown projection {kind!r}; use 'linear', 'mlp' or 'identity'")


def _spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise ConfigError(f"encoder spec {spec!r} has no 'name'")
    return spec


def _build_tower(build: Callable[..., nn.Module], spec: dict[str, Any], key: str) -> nn.Module:
    """Build one tower; a failed weight download names the config key that points at a local copy."""
    try:
        return build(**spec)
    except DownloadError as exc:
        if exc.option and f"pass {exc.option}=" in str(exc):
            error = type(exc)(str(exc).replace(f"pass {exc.option}=", f"pass model.{key}.{exc.option}="))
            raise error from exc
        raise


class DualEncoder(nn.Module):
    """Audio and text encoders plus projections to a shared ``embed_dim`` space (cosine similarity)."""

    #: What runs it (an exported folder is run by ``export.runtime.OnnxModel``, ``runtime = "onnx"``).
    runtime = "torch"
    quantize: str | None = None

    def __init__(
        self,
        audio_encoder: str | dict[str, Any],
        text_encoder: str | dict[str, Any],
        embed_dim: int = 1024,
        audio_projection: str = "linear",
        text_projection: str = "linear",
        tau: float = DEFAULT_TAU,
    ) -> None:
        super().__init__()
        if not float(tau) > 0:
            raise ConfigError(f"model tau must be > 0, got {tau!r}")
        #: The temperature: ``softmax(similarity / tau)`` is what the model was trained to predict.
        self.tau = float(tau)
        #: What identifies the model's weights (the sha256 of its file); None until a loader sets it.
        self.identity: str | None = None
        #: What its file says about it (the run that trained it, its source, ...).
        self.meta: dict[str, Any] = {}
        audio_spec, text_spec = _spec(audio_encoder), _spec(text_encoder)
        self.config = {
            "audio_encoder": audio_spec,
            "text_encoder": text_spec,
            "embed_dim": embed_dim,
            "audio_projection": audio_projection,
            "text_projection": text_projection,
        }
        self.audio = _build_tower(build_audio_encoder, audio_spec, "audio_encoder")
        self.text = _build_tower(build_text_encoder, text_spec, "text_encoder")
        self.audio_proj = _projection(audio_projection, self.audio.out_dim, embed_dim)
        self.text_proj = _projection(text_projection, self.text.out_dim, embed_dim)

    @classmethod
    def from_config(cls, config: dict[str, Any], tau: float = DEFAULT_TAU) -> DualEncoder:
        """The model a ``config`` (as in ``model.config``) describes, at temperature ``tau``."""
        return cls(**copy.deepcopy(config), tau=tau)

    @property
    def sample_rate(self) -> int:
        return int(self.audio.sample_rate)

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def device(self) -> torch.device:
        return next(self.audio_proj.parameters()).device

    def encode_audio(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) waveforms at ``sample_rate`` -> (B, D) unit vectors."""
        return nn.functional.normalize(self.audio_proj(self.audio(waveform, lengths)), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions -> (B, D) unit vectors."""
        return nn.functional.normalize(self.text_proj(self.text(list(texts))), dim=-1)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None, texts: Sequence[str]
    ) -> torch.Tensor:
        """Similarity matrix laid out (n_audio, n_caption)."""
        return self.encode_audio(waveform, lengths) @ self.encode_text(texts).T

    # ----------------------------------------------------------------------------------------------
    # Inference helpers: deterministic (eval mode; a clip's embedding never depends on its batch).

    #: Clips batched together may differ in length by at most this fraction of the longest (padding
    #: waste bound) when the audio encoder is ``batch_invariant``.
    EMBED_MAX_PADDING = 0.2

    @torch.no_grad()
    def embed_waveforms(
        self,
        waveforms: Sequence[np.ndarray],
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed mono waveforms (at ``sample_rate``) -> (N, D) float32 unit vectors, in input order.

        An audio encoder that declares ``batch_invariant = True`` (its eval-mode output for each clip of
        a zero-padded batch with ``lengths`` equals that clip's output alone, up to float rounding) gets
        clips sorted by length and batched with similar lengths (``EMBED_MAX_PADDING``). Any other
        encoder gets clips batched only with clips of exactly the same length. Either way a clip's
        embedding does not depend on what else is in the batch. ``progress(n)`` is called after each
        batch with its size.
        """
        was_training = self.training
        self.eval()
        out = np.zeros((len(waveforms), self.embed_dim), dtype=np.float32)
        try:
            for chunk, wav, lengths in self._batches(waveforms, batch_size):
                out[chunk] = self.encode_audio(wav, lengths).float().cpu().numpy()
                if progress is not None:
                    progress(len(chunk))
        finally:
            self.train(was_training)
        return out

    def _batches(self, waveforms: Sequence[np.ndarray], batch_size: int):
        """(indices, zero-padded batch (B, T) on the model's device, lengths (B,)) of ``waveforms`` batched
        as ``embed_waveforms`` says."""
        sizes = [len(w) for w in waveforms]
        invariant = bool(self.audio.batch_invariant)
        for chunk in length_grouped_batches(sizes, batch_size, self.EMBED_MAX_PADDING if invariant else None):
            longest = max(sizes[i] for i in chunk)
            dtype = np.result_type(*(np.asarray(waveforms[i]).dtype for i in chunk))
            batch = np.zeros((len(chunk), longest), dtype=dtype)
            for row, i in enumerate(chunk):
                batch[row, : sizes[i]] = waveforms[i]
            yield chunk, torch.from_numpy(batch).to(self.device), torch.tensor(
                [sizes[i] for i in chunk], dtype=torch.long, device=self.device)

    @property
    def pools_patches(self) -> bool:
        """Whether the audio tower pools per-patch outputs (its ``patch_grid``), so a file's windows can be
        pooled from the file's own patches (``embed_patch_windows``)."""
        return self.audio.patch_grid is not None

    @torch.no_grad()
    def embed_patch_windows(self, waveforms: Sequence[np.ndarray], spans: Sequence[np.ndarray],
                            batch_size: int = 32, rule: str = "inside",
                            progress: Callable[[int], None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each waveform's unit vector (as ``embed_waveforms``) and its windows' ((W, D); ``spans[i]``: (W, 2)
        samples), each window pooled from the patches of the file that ``spans.patch_ranges`` gives it by
        ``rule``: the tower runs once per file. Only where ``pools_patches``."""
        patch, hop = self.audio.patch_grid
        was_training = self.training
        self.eval()
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(waveforms)  # type: ignore[list-item]
        try:
            for chunk, wav, lengths in self._batches(waveforms, batch_size):
                outputs, counts, side = self.audio.patch_outputs(wav, lengths)
                pooled, sizes = [self.audio.pool_patch_outputs(outputs, counts, side)], []
                for row, i in enumerate(chunk):
                    n = int(counts[row])
                    ranges = patch_ranges(spans[i], n, patch, hop, rule)
                    sizes.append(len(ranges))
                    if len(ranges):
                        width = ranges[:, 1] - ranges[:, 0]
                        at = torch.from_numpy(np.minimum(ranges[:, :1] + np.arange(int(width.max())), n - 1)).to(wav.device)
                        pooled.append(self.audio.pool_patch_outputs(
                            outputs[row][at], torch.from_numpy(width).to(wav.device), None if side is None else side[row][at]))
                vectors = nn.functional.normalize(self.audio_proj(torch.cat(pooled)), dim=-1).float().cpu().numpy()
                for i, pair in zip(chunk, files_then_windows(vectors, sizes)):
                    out[i] = pair
                if progress is not None:
                    progress(len(chunk))
        finally:
            self.train(was_training)
        return out

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed captions -> (N, D) float32 unit vectors."""
        was_training = self.training
        self.eval()
        try:
            parts = [
                self.encode_text(texts[i : i + batch_size]).float().cpu().numpy()
                for i in range(0, len(texts), batch_size)
            ]
        finally:
            self.train(was_training)
        return np.concatenate(parts) if parts else np.zeros((0, self.embed_dim), np.float32)

    def embed_audio(self, audio: Any, batch_size: int = 32) -> np.ndarray:
        """Audio files and/or mono waveforms at ``sample_rate`` (``audio.as_waveforms``) -> (N, D)
        float32 unit vectors in input order: batched and deterministic, as ``embed_waveforms``."""
        from soundsift.audio import as_waveforms

        return self.embed_waveforms(as_waveforms(audio, self.sample_rate), batch_size)

    def embed_text(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """A caption or captions -> (N, D) float32 unit vectors (``embed_texts``)."""
        return self.embed_texts([texts] if isinstance(texts, str) else list(texts), batch_size)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without frozen pretrained sub-modules (rebuilt from their source on load)."""
        skip = [name + "." for name, m in self.named_modules() if getattr(m, "frozen_pretrained", False)]
        return {k: v for k, v in self.state_dict().items() if not any(k.startswith(p) for p in skip)}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor], source: str = "") -> None:
        """Load a state dict saved by ``trainable_state_dict``; refuses any key or shape mismatch.

        The towers' ``upgrade_state_dict(state_dict, prefix)`` first rename keys of older files.
        """
        state_dict = self.audio.upgrade_state_dict(state_dict, "audio.")
        state_dict = self.text.upgrade_state_dict(state_dict, "text.")
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        shapes = sorted(
            k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
        )
        if missing or unexpected or shapes:
            raise ModelFileError(
                f"{source or 'state dict'} does not match the model: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}, shape mismatch {shapes[:8]}"
            )
        self.load_state_dict(state_dict, strict=False)
