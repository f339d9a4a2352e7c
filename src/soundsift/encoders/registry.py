"""The audio and text encoder registries: name -> factory of an ``AudioEncoder`` / ``TextEncoder``
(``encoders/base.py`` states what they provide and their optional capabilities).

Building from a spec ``{name, **options}`` checks the options against the family's ``Options`` dataclass
(``encoders/options.py``): an unknown option or a value of the wrong type is a ``ConfigError`` naming
``model.audio_encoder.<option>`` (or ``model.text_encoder.<option>``). Older spellings are mapped first
(``random_init: X`` -> ``pretrained: not X``).

Register a class or factory with a decorator, or a ``"module:attr"`` string for lazy import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from soundsift.encoders.base import AudioEncoder, Encoder, TextEncoder
from soundsift.errors import ConfigError
from soundsift.registry import Registry

AUDIO_ENCODERS = Registry("audio encoder")
TEXT_ENCODERS = Registry("text encoder")


def register_audio_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register an audio encoder factory under ``name`` (usable as a decorator)."""
    return AUDIO_ENCODERS.register(name, target)


def register_text_encoder(name: str, target: Callable[..., Any] | str | None = None):
    """Register a text encoder factory under ``name`` (usable as a decorator)."""
    return TEXT_ENCODERS.register(name, target)


def upgrade_options(options: Mapping[str, Any], key: str = "model.encoder") -> dict[str, Any]:
    """``options`` with older spellings mapped: ``random_init: X`` becomes ``pretrained: not X`` (with
    ``local_files_only: false`` unless given: random_init never meant offline)."""
    out = dict(options)
    if "random_init" not in out:
        return out
    random_init = out.pop("random_init")
    if not isinstance(random_init, bool):
        raise ConfigError(f"{key}.random_init must be true or false, got {random_init!r}")
    if out.get("pretrained") is not None and out["pretrained"] == random_init:
        raise ConfigError(f"{key}: random_init: {str(random_init).lower()} contradicts pretrained: "
                          f"{str(out['pretrained']).lower()}; use pretrained alone")
    out["pretrained"] = not random_init
    if random_init:
        out.setdefault("local_files_only", False)
    return out


def random_weights(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An encoder spec with ``pretrained: false``: random weights, nothing downloaded, no network (what
    ``train --dry-run --no-pretrained`` builds), whatever spelling the spec used."""
    out = {k: v for k, v in spec.items() if k not in ("random_init", "local_files_only")}
    out["pretrained"] = False
    return out


def check_options(factory: Callable[..., Any], name: str, options: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``options`` (older spellings mapped) checked against the family's ``Options`` dataclass, with the
    values it validated (a YAML list for a tuple option becomes a tuple)."""
    from pydantic import TypeAdapter, ValidationError

    options = upgrade_options(options, key)
    spec = factory.Options if isinstance(factory, type) and issubclass(factory, Encoder) else None
    if spec is None:  # a factory function, or a class that declares no options: its own checks apply
        return options
    known = {f.name for f in dataclasses.fields(spec)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: not an option of the {name!r} encoder "
                          f"(its options: {', '.join(sorted(known))})")
    try:
        checked = TypeAdapter(spec).validate_python(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{key}.{where}: {error['msg'][0].lower()}{error['msg'][1:]}, got "
                          f"{error.get('input')!r}") from None
    return {k: getattr(checked, k) for k in options}


def _checked(encoder: Any, contract: type, name: str) -> Any:
    if not isinstance(encoder, contract):  # a programming error of whoever registered it
        raise TypeError(f"encoder {name!r} built a {type(encoder).__name__}, not a soundsift.encoders.{contract.__name__}")
    encoder.family = name
    return encoder


def build_audio_encoder(name: str, **options: Any) -> AudioEncoder:
    """Instantiate the audio encoder registered as ``name`` with its checked ``options``."""
    factory = AUDIO_ENCODERS.get(name)
    return _checked(factory(**check_options(factory, name, options, "model.audio_encoder")), AudioEncoder, name)


def build_text_encoder(name: str, **options: Any) -> TextEncoder:
    """Instantiate the text encoder registered as ``name`` with its checked ``options``."""
    factory = TEXT_ENCODERS.get(name)
    return _checked(factory(**check_options(factory, name, options, "model.text_encoder")), TextEncoder, name)


def audio_encoder_names() -> list[str]:
    return AUDIO_ENCODERS.names()


def text_encoder_names() -> list[str]:
    return TEXT_ENCODERS.names()
