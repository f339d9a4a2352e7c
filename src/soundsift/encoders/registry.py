"""The audio and text encoder registries.

Audio encoders are ``torch.nn.Module`` objects with
  - ``sample_rate: int``  the rate they expect waveforms at,
  - ``out_dim: int``      the size of the clip embedding they return,
  - ``forward(waveform: (B, T) float tensor, lengths: (B,) long tensor | None) -> (B, out_dim)``;
    they own their front end (e.g. log-mel), windowing of long inputs and train-time augmentation
    (active only in ``training`` mode), so inference is deterministic;
  - optionally ``batch_invariant: bool``: True when, in eval mode, each clip of a zero-padded batch
    with ``lengths`` embeds exactly as it would alone; ``DualEncoder.embed_waveforms`` then batches clips
    of different lengths (otherwise only clips of equal length). tests/test_batched_embedding.py checks it.
Text encoders are ``torch.nn.Module`` objects with
  - ``out_dim: int``,
  - ``forward(texts: list[str]) -> (B, out_dim)`` (tokenisation and device placement inside).

Register a class or factory with a decorator, or a ``"module:attr"`` string for lazy import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from soundsift.registry import Registry

AUDIO_ENCODERS = Registry("audio encoder")
TEXT_ENCODERS = Registry("text encoder")


def register_audio_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register an audio encoder factory under ``name`` (usable as a decorator)."""
    return AUDIO_ENCODERS.register(name, target)


def register_text_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register a text encoder factory under ``name`` (usable as a decorator)."""
    return TEXT_ENCODERS.register(name, target)


def build_audio_encoder(name: str, **kwargs: Any):
    """Instantiate the audio encoder registered as ``name`` with ``kwargs``."""
    return AUDIO_ENCODERS.get(name)(**kwargs)


def build_text_encoder(name: str, **kwargs: Any):
    """Instantiate the text encoder registered as ``name`` with ``kwargs``."""
    return TEXT_ENCODERS.get(name)(**kwargs)


def audio_encoder_names() -> list[str]:
    return AUDIO_ENCODERS.names()


def text_encoder_names() -> list[str]:
    return TEXT_ENCODERS.names()
