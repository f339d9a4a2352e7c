"""Reading configs: YAML files (with ``base:`` inheritance) merged over the defaults, ``a.b.c=value``
overrides, then one validation into a :class:`~soundsift.config.schema.Config`.

Merging stays on plain dicts (YAML's own data) so that a file or override can replace an encoder spec
as a whole; pydantic validates the result once, and its errors become one-line ``ConfigError``s.
"""

from __future__ import annotations

import copy
import os
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from soundsift.config.schema import Config, EncoderSpec
from soundsift.errors import ConfigError

#: The defaults as the nested dict a config file spells (``Config().to_dict()``).
DEFAULTS: dict[str, Any] = Config().to_dict()


def _is_encoder_spec(key: str) -> bool:
    return key.endswith("_encoder")


def merge(
    base: dict[str, Any], update: Mapping[str, Any], whole: Callable[[str], bool] = _is_encoder_spec
) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``. A key for which ``whole(key)`` holds is
    replaced as a whole (by default the encoder specs: a new encoder brings its own options)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and not whole(key):
            out[key] = merge(out[key], value, whole)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(raw) if raw != "" else None


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for text in overrides:
        path, value = parse_override(text)
        node = config
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return config


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """DEFAULTS <- YAML file (optionally ``base:`` another file, relative to it) <- overrides."""
    raw = copy.deepcopy(DEFAULTS)
    if path is not None:
        raw = merge(raw, read_yaml(path))
    config = build_config(apply_overrides(raw, overrides))
    if config.out_dir is None:
        config = config.model_copy(update={"out_dir": default_out_dir(path)})
    return config


def build_config(raw: Mapping[str, Any]) -> Config:
    """Validate a nested dict (a merged YAML config, an old ``config.yaml``) into a :class:`Config`."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, raw) from None


RUN_DIR_ENV = "SOUNDSIFT_RUN_DIR"


def default_out_dir(path: str | Path | None) -> str:
    """``runs/{config name}-{YYYYmmdd-HHMMSS}`` (a suffix if that exists). The choice is passed on in
    ``$SOUNDSIFT_RUN_DIR`` to the processes that distributed training starts (they run this again)."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        if os.environ.get(RUN_DIR_ENV):
            return os.environ[RUN_DIR_ENV]
    stem = Path(path).stem if path is not None else "train"
    base = f"runs/{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while Path(out).exists():
        n += 1
        out = f"{base}-{n}"
    os.environ[RUN_DIR_ENV] = out
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = resolve_config_path(path)
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = merge(read_yaml(path.parent / base, (*_seen, path)), data)
    return data


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, else relative to the packaged configs (``demo/stage1.yaml``)."""
    path = Path(path)
    if path.is_file():
        return path.resolve()
    packaged = Path(__file__).resolve().parents[1] / "configs" / path
    for candidate in (packaged, packaged.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: config file not found")


def dump_config(config: Config, path: str | Path) -> Path:
    """Write ``config`` as ``config.yaml`` (the nested dict of :meth:`Config.to_dict`)."""
    from soundsift.atomic import atomic_write

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ------------------------------------------------------------------------ pydantic errors, one line
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               tuple: "a list", dict: "a mapping"}


def _wanted(tp: Any) -> str:
    """What a field annotation accepts, in words ("an integer or a string")."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _wanted(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_wanted(a) for a in typing.get_args(tp) if a is not type(None))
    if tp is EncoderSpec:
        return "a mapping or a string"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "a mapping"
    return _TYPE_NAMES.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _field_at(loc: tuple[Any, ...]) -> tuple[list[str], Any]:
    """The dotted key of the deepest config field ``loc`` names, and its annotation."""
    model: Any = Config
    keys: list[str] = []
    annotation: Any = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            break
        keys.append(str(part))
        annotation = model.model_fields[part].annotation
        inner = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
        model = inner[0] if len(inner) == 1 else None
        if model is EncoderSpec:
            break
    return keys, annotation


def _value_at(raw: Mapping[str, Any], keys: list[str]) -> Any:
    node: Any = raw
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def _config_error(exc: ValidationError, raw: Mapping[str, Any]) -> ConfigError:
    """pydantic's errors as the one-line message of the first: unknown keys, a wrong type, a bad value."""
    errors = exc.errors()
    for err in errors:  # our own checks (validators) raise ConfigError: pass it on as it is
        if isinstance((err.get("ctx") or {}).get("error"), ConfigError):
            return err["ctx"]["error"]
    extra = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
    top = sorted(str(loc[0]) for loc in extra if len(loc) == 1)
    if top:
        return ConfigError(f"unknown config keys {top}; known: {sorted(Config.model_fields)}")
    typed = [e for e in errors if e["type"] != "extra_forbidden"]
    if typed:
        keys, annotation = _field_at(typed[0]["loc"])
        return ConfigError(f"{'.'.join(keys)} must be {_wanted(annotation)}, got {_value_at(raw, keys)!r}")
    section = extra[0][:-1]
    keys, annotation = _field_at(section)
    fields = typing.get_args(annotation) or (annotation,)
    model = next(f for f in fields if isinstance(f, type) and issubclass(f, BaseModel))
    unknown = sorted(str(loc[-1]) for loc in extra if loc[:-1] == section)
    return ConfigError(f"unknown keys in '{'.'.join(keys)}': {unknown}; known: {sorted(model.model_fields)}")
