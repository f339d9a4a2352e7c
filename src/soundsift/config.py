"""Experiment configs: YAML files merged over defaults, with ``a.b.c=value`` overrides.

Stage 1 and stage 2 are the same schema: stage 2 sets ``init_from`` (a stage-1 model) and ``teachers``
(teacher embedding files) and moves weight from ``loss.loss_weight`` to ``loss.distill_weight``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from soundsift.errors import ConfigError

#: The correspondence estimators stage 2 can use (``soundsift.training.estimators`` holds their code and
#: its ``register_estimator`` adds to this), each with whether it reads teacher files (``teachers``) or
#: computes its targets from the training split itself.
KNOWN_ESTIMATORS: dict[str, bool] = {"ensemble": True, "mix": True, "caption-similarity": False, "model": False}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "out_dir": None,  # None: runs/{config name}-{date-time}, a fresh folder per run
    "data": {
        "format": "clotho",  # a name from soundsift.data.readers.READERS
        "root": None,
        "train_split": "development",
        "val_split": "validation",
        "test_split": "evaluation",
        "extra_train": [],  # more training data: [{format, root, split}], e.g. AudioCaps + WavCaps
        "captions_per_epoch": "all",  # "all": every (clip, caption) pair; "one": one random caption per clip
        "max_seconds": None,  # cut longer clips (random offset in training, start at evaluation)
        "preload": "auto",  # hold waveforms in memory: true | false | auto (when they fit in ~4 GB)
        "num_workers": 0,
    },
    "model": {
        "audio_encoder": {"name": "cnn"},
        "text_encoder": {"name": "minilm"},
        "embed_dim": 1024,
        "audio_projection": "linear",
        "text_projection": "linear",
    },
    "init_from": None,  # a soundsift model file whose weights initialise this run (stage 2)
    "teachers": [],  # teacher embedding files (soundsift teachers); M = len(teachers)
    "estimator": {  # how stage 2 gets C_hat (docs/reproduce.md, "Correspondence estimators")
        "name": "ensemble",  # ensemble (mean of the teachers: the paper) | mix | caption-similarity | model
        "weights": None,  # mix: one weight > 0 per entry of teachers (a weighted mean)
        "text_model": "minilm",  # caption-similarity: a text encoder name, or a soundsift model's text tower
        "model": None,  # model: a soundsift model file or published name (zero-shot) used as the teacher
    },
    "loss": {"tau": 0.05, "loss_weight": 1.0, "distill_weight": 0.0},
    "optim": {
        "optimizer": "adamw",  # adam | adamw
        "lr": 2e-5,
        "min_lr": 1e-7,
        "lr_audio": None,  # per-tower learning rates; None -> lr
        "lr_text": None,
        "lr_head": None,  # the two projections
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "warmup_epochs": 1,
        "epochs": 20,
        "decay_epochs": None,  # the cosine reaches min_lr here and stays (salsa: 15 of 20); None: epochs
        "batch_size": 64,
        "grad_clip": None,
    },
    "trainer": {
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "compile": False,  # torch.compile the towers' forward passes (GPU training; first steps compile)
        "sync_batchnorm": False,  # several GPUs: BatchNorm statistics over the global batch (cnn, crnn, mn)
        "progress_bar": True,
        "log_every_n_steps": 10,
        "eval_batch_size": 32,
        # checkpoints/last.ckpt every this many optimiser steps within an epoch (and at every epoch end),
        # so a killed run loses little when started again; 0: at epoch ends only
        "checkpoint_every_n_steps": 200,
    },
}


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


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """DEFAULTS <- YAML file (optionally ``base:`` another file, relative to it) <- overrides."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        config = merge(config, read_yaml(path))
    config = apply_overrides(config, overrides)
    validate(config)
    if config["out_dir"] is None:
        config["out_dir"] = default_out_dir(path)
    return config


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
    packaged = Path(__file__).parent / "configs" / path
    for candidate in (packaged, packaged.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: config file not found")


#: Keys whose value may be of more than the default's type (Lightning accepts these spellings).
_ALSO_ALLOWED: dict[str, tuple[type, ...]] = {
    "data.preload": (bool, str),
    "trainer.devices": (int, str, list),
    "trainer.precision": (str, int),
    "optim.decay_epochs": (int, float),
    "model.audio_encoder": (dict, str),
    "model.text_encoder": (dict, str),
}
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def _check_value(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of ``default`` (an int for a float, a numeric string such as YAML's
    ``2e-5`` for a float); else ConfigError naming ``key``."""
    if default is None:  # no default to compare with: any value (None means "unset")
        return value
    allowed = _ALSO_ALLOWED.get(key, (type(default),))
    if isinstance(value, bool) and bool not in allowed:  # bool is an int in Python, never here
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(allowed[0], allowed[0].__name__)}, got {value!r}")
    if isinstance(value, allowed):
        return value
    if str in allowed and isinstance(value, os.PathLike):
        return os.fspath(value)
    if float in allowed:
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
    raise ConfigError(f"{key} must be {wanted}, got {value!r}")


#: Keys whose default is None (unset), with a value of the type they take when set.
_UNSET_TYPES: dict[str, Any] = {
    "out_dir": "", "init_from": "", "data.root": "", "data.max_seconds": 0.0, "optim.lr_audio": 0.0,
    "optim.lr_text": 0.0, "optim.lr_head": 0.0, "optim.grad_clip": 0.0, "optim.decay_epochs": 0.0,
    "estimator.weights": [], "estimator.model": "",
}


def _check_types(config: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> None:
    """Type-check (and coerce numeric strings) every key of ``config`` that ``defaults`` knows."""
    for key, default in defaults.items():
        if key not in config:
            continue
        name = prefix + key
        if default is None and config[key] is not None:
            default = _UNSET_TYPES.get(name)
        if isinstance(default, dict) and name not in _ALSO_ALLOWED:
            if not isinstance(config[key], dict):
                raise ConfigError(f"{name} must be a mapping, got {config[key]!r}")
            _check_types(config[key], default, name + ".")
        else:
            config[key] = _check_value(name, config[key], default)


#: (key, bound, strict): values that would make a run meaningless (an untrained model, no batches).
_RANGES = (
    ("optim.epochs", 1, False), ("optim.batch_size", 1, False), ("optim.lr", 0, True), ("optim.min_lr", 0, False),
    ("optim.lr_audio", 0, False), ("optim.lr_text", 0, False), ("optim.lr_head", 0, False),
    ("optim.warmup_epochs", 0, False), ("optim.decay_epochs", 0, True), ("trainer.eval_batch_size", 1, False), ("data.num_workers", 0, False),
    ("data.max_seconds", 0, True), ("trainer.num_nodes", 1, False), ("model.embed_dim", 1, False),
)


def validate(config: dict[str, Any]) -> None:
    """Refuse unknown keys and values of the wrong type (naming the key); coerce numeric strings."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if isinstance(config.get("estimator"), str):  # the shorthand estimator=NAME
        config["estimator"] = {**DEFAULTS["estimator"], "name": config["estimator"]}
    config.setdefault("estimator", copy.deepcopy(DEFAULTS["estimator"]))
    _check_types(config, DEFAULTS)
    for section in ("data", "model", "optim", "loss", "trainer", "estimator"):
        extra = set(config[section]) - set(DEFAULTS[section])
        if extra:
            raise ConfigError(f"unknown keys in '{section}': {sorted(extra)}; known: {sorted(DEFAULTS[section])}")
    loss = config["loss"]
    if float(loss["tau"]) <= 0:
        raise ConfigError("loss.tau must be > 0")
    _validate_estimator(config)
    if float(loss["loss_weight"]) == 0 and float(loss["distill_weight"]) == 0:
        raise ConfigError("loss.loss_weight and loss.distill_weight are both 0: nothing to train")
    if config["data"]["captions_per_epoch"] not in ("all", "one"):
        raise ConfigError("data.captions_per_epoch must be 'all' or 'one'")
    if config["optim"]["optimizer"] not in ("adam", "adamw"):
        raise ConfigError("optim.optimizer must be 'adam' or 'adamw'")
    optim = config["optim"]
    if optim["decay_epochs"] is not None and not optim["warmup_epochs"] <= optim["decay_epochs"] <= optim["epochs"]:
        raise ConfigError(f"optim.decay_epochs must lie between optim.warmup_epochs ({optim['warmup_epochs']}) "
                          f"and optim.epochs ({optim['epochs']}), got {optim['decay_epochs']}")
    for key, low, strict in _RANGES:
        section, name = key.split(".")
        value = config[section][name]
        if value is not None and (value <= low if strict else value < low):
            raise ConfigError(f"{key} must be {'>' if strict else '>='} {low}, got {value!r}: the run would be meaningless")


def _validate_estimator(config: dict[str, Any]) -> None:
    est, teachers = config["estimator"], config["teachers"]
    name = est["name"]
    if name not in KNOWN_ESTIMATORS:
        raise ConfigError(f"estimator.name: unknown correspondence estimator {name!r}; known: {', '.join(sorted(KNOWN_ESTIMATORS))}")
    if KNOWN_ESTIMATORS[name]:
        if float(config["loss"]["distill_weight"]) > 0 and not teachers:
            raise ConfigError("loss.distill_weight > 0 needs at least one entry in 'teachers' (or an estimator that "
                              "needs none: estimator.name=caption-similarity or model)")
    elif teachers:
        raise ConfigError(f"estimator.name={name} computes its targets from the training split: set teachers=[] "
                          f"(to combine it with teacher files, write it with `soundsift teachers --estimator {name}` "
                          "and use estimator.name=mix)")
    if name == "mix":
        weights = est["weights"]
        if weights is None or len(weights) != len(teachers) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
            raise ConfigError(f"estimator.name=mix needs estimator.weights: {len(teachers)} numbers > 0, one per "
                              f"entry of teachers, got {weights!r}")
    elif est["weights"] is not None:
        raise ConfigError(f"estimator.weights is for estimator.name=mix (the estimator is {name})")
    if name == "model" and not est["model"]:
        raise ConfigError("estimator.name=model needs estimator.model: a model file or a published name such as zero-shot")


def dump_config(config: dict[str, Any], path: str | Path) -> Path:
    from soundsift.atomic import atomic_write

    text = yaml.safe_dump(config, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
