"""Name -> encoder registry (timm-style), lazy so that ``import soundsift`` stays fast.

Audio encoders are ``torch.nn.Module`` objects with
  - ``sample_rate: int``  the rate they expect waveforms at,
  - ``out_dim: int``      the size of the clip embedding they return,
  - ``forward(waveform: (B, T) float tensor, lengths: (B,) long tensor | None) -> (B, out_dim)``;
    they own their front end (e.g. log-mel), windowing of long inputs and train-time augmentation
    (active only in ``training`` mode), so inference is deterministic.
Text encoders are ``torch.nn.Module`` objects with
  - ``out_dim: int``,
  - ``forward(texts: list[str]) -> (B, out_dim)`` (tokenisation and device placement inside).

Register a class or factory with a decorator, or a ``"module:attr"`` string for lazy import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_AUDIO: dict[str, Callable[..., Any] | str] = {}
_TEXT: dict[str, Callable[..., Any] | str] = {}


def _register(table: dict, kind: str, name: str, target: Callable[..., Any] | str | None):
    def add(obj):
        if name in table and table[name] is not obj:
            raise ValueError(f"{kind} encoder {name!r} is already registered")
        table[name] = obj
        return obj

    return add if target is None else add(target)


def register_audio_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register an audio encoder factory under ``name`` (usable as a decorator)."""
    return _register(_AUDIO, "audio", name, target)


def register_text_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register a text encoder factory under ``name`` (usable as a decorator)."""
    return _register(_TEXT, "text", name, target)


def _resolve(table: dict, kind: str, name: str) -> Callable[..., Any]:
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise KeyError(f"unknown {kind} encoder {name!r}; registered: {known}")
    target = table[name]
    if isinstance(target, str):
        module, attr = target.split(":")
        target = getattr(importlib.import_module(module), attr)
        table[name] = target
    return target


def build_audio_encoder(name: str, **kwargs: Any):
    """Instantiate the audio encoder registered as ``name`` with ``kwargs``."""
    return _resolve(_AUDIO, "audio", name)(**kwargs)


def build_text_encoder(name: str, **kwargs: Any):
    """Instantiate the text encoder registered as ``name`` with ``kwargs``."""
    return _resolve(_TEXT, "text", name)(**kwargs)


def audio_encoder_names() -> list[str]:
    return sorted(_AUDIO)


def text_encoder_names() -> list[str]:
    return sorted(_TEXT)
