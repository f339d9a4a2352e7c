"""The audio and text encoder registries: name -> factory of an ``AudioEncoder`` / ``TextEncoder``
(``encoders/base.py`` states what they provide and their optional capabilities).

Register a class or factory with a decorator, or a ``"module:attr"`` string for lazy import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from soundsift.encoders.base import AudioEncoder, TextEncoder
from soundsift.registry import Registry

AUDIO_ENCODERS = Registry("audio encoder")
TEXT_ENCODERS = Registry("text encoder")


def register_audio_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register an audio encoder factory under ``name`` (usable as a decorator)."""
    return AUDIO_ENCODERS.register(name, target)


def register_text_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register a text encoder factory under ``name`` (usable as a decorator)."""
    return TEXT_ENCODERS.register(name, target)


def _checked(encoder: Any, contract: type, name: str) -> Any:
    if not isinstance(encoder, contract):  # a programming error of whoever registered it
        raise TypeError(f"encoder {name!r} built a {type(encoder).__name__}, not a soundsift.encoders.{contract.__name__}")
    return encoder


def build_audio_encoder(name: str, **kwargs: Any) -> AudioEncoder:
    """Instantiate the audio encoder registered as ``name`` with ``kwargs``."""
    return _checked(AUDIO_ENCODERS.get(name)(**kwargs), AudioEncoder, name)


def build_text_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """Instantiate the text encoder registered as ``name`` with ``kwargs``."""
    return _checked(TEXT_ENCODERS.get(name)(**kwargs), TextEncoder, name)


def audio_encoder_names() -> list[str]:
    return AUDIO_ENCODERS.names()


def text_encoder_names() -> list[str]:
    return TEXT_ENCODERS.names()
