"""The experiment config as frozen, typed sections (pydantic v2 models, ``extra="forbid"``).

Each component takes its own section (``optim`` builds the optimiser, ``trainer`` the Lightning
Trainer...). Types are checked strictly; the only coercions are the ones YAML and the command line
need: a numeric string (YAML reads ``2e-5`` as a string) or an integer for a number, a path for a
string, a list for a tuple. :func:`soundsift.config.load.build_config` turns pydantic's errors into one
line naming the key, as the hand-written checks did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_serializer, model_validator

from soundsift.config.estimators import estimator_names, estimator_record
from soundsift.errors import ConfigError, UnknownNameError


def _number(value: Any) -> Any:
    """An int or a numeric string as a float (bools stay, and are refused)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _path(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


Number = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_path)]
Texts = Annotated[tuple[Text, ...], BeforeValidator(_as_tuple)]


class Section(BaseModel):
    """A frozen config section: unknown keys and values of the wrong type are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ExtraTrain(Section):
    """One more training dataset (``data.extra_train``)."""

    format: Text
    root: Text | None = None
    split: Text | None = None
    # wavcaps: the FreeSound ids to leave out (relative: to root; default root/dcase2024_task6_excluded_freesound_ids.csv)
    exclude_ids: Text | None = Field(default=None, repr=False)  # out of repr: sweep-point hashes stay

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}


class DataConfig(Section):
    format: Text = "clotho"  # a name from soundsift.data.readers.READERS
    root: Text | None = None
    train_split: Text | None = "development"
    val_split: Text | None = "validation"
    test_split: Text | None = "evaluation"
    # a relevance file of the test split (DCASE 2025 layout; relative: to root); out of repr, which sweep
    # points are hashed over (their hashes stay those of runs recorded before it existed)
    relevance: Text | None = Field(default=None, repr=False)
    extra_train: Annotated[tuple[ExtraTrain, ...], BeforeValidator(_as_tuple)] = ()  # e.g. AudioCaps + WavCaps
    captions_per_epoch: Text = "all"  # "all": every (clip, caption) pair; "one": one random caption per clip
    max_seconds: Number | None = None  # cut longer clips (random offset in training, start at evaluation)
    preload: bool | Text = "auto"  # hold waveforms in memory: true | false | auto (when they fit in ~4 GB)
    num_workers: int = 0


class EncoderSpec(BaseModel):
    """An encoder by registry name with its options, as written: ``cnn`` or ``{name: cnn, size: tiny}``.

    The config layer keeps the options open: the encoder family validates them when it is built.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    shorthand: bool = Field(default=False, repr=False)  # written as the bare name
    order: tuple[str, ...] = Field(default=(), repr=False)  # the keys as written (to write them back)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "shorthand": True, "order": ("name",)}
        if isinstance(value, Mapping) and "options" not in value:
            if "name" not in value:
                raise ConfigError(f"encoder spec {dict(value)!r} has no 'name'")
            rest = {str(k): v for k, v in value.items() if k != "name"}
            return {"name": value["name"], "options": rest, "order": tuple(str(k) for k in value)}
        return value

    @model_serializer
    def to_value(self) -> str | dict[str, Any]:
        """The spec as it was written (the form a model file and config.yaml hold)."""
        if self.shorthand and not self.options:
            return self.name
        keys = self.order or ("name", *self.options)
        return {k: self.name if k == "name" else self.options[k] for k in keys}

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **options}`` (the keyword arguments of the encoder's constructor)."""
        return {"name": self.name, **self.options}


class ModelConfig(Section):
    audio_encoder: EncoderSpec = Field(default_factory=lambda: EncoderSpec.model_validate({"name": "cnn"}))
    text_encoder: EncoderSpec = Field(default_factory=lambda: EncoderSpec.model_validate({"name": "minilm"}))
    embed_dim: int = 1024
    audio_projection: Text = "linear"
    text_projection: Text = "linear"

    def to_dict(self) -> dict[str, Any]:
        """The keyword arguments of ``DualEncoder`` (what a model file stores)."""
        return self.model_dump()


class EstimatorConfig(Section):
    """How stage 2 gets C_hat (docs/reproduce.md, "Correspondence estimators")."""

    name: Text = "ensemble"  # ensemble (mean of the teachers: the paper) | mix | caption-similarity | model
    weights: Annotated[tuple[Any, ...], BeforeValidator(_as_tuple)] | None = None  # mix: one weight > 0 per teacher
    text_model: Text = "minilm"  # caption-similarity: a text encoder name, or a soundsift model's text tower
    model: Text | None = None  # model: a soundsift model file or published name (zero-shot) used as the teacher


class LossConfig(Section):
    tau: Number = 0.05
    loss_weight: Number = 1.0
    distill_weight: Number = 0.0


class OptimConfig(Section):
    optimizer: Text = "adamw"  # adam | adamw
    lr: Number = 2e-5
    min_lr: Number = 1e-7
    lr_audio: Number | None = None  # per-tower learning rates; None -> lr
    lr_text: Number | None = None
    lr_head: Number | None = None  # the two projections
    weight_decay: Number = 0.0
    betas: Annotated[tuple[Number, Number], BeforeValidator(_as_tuple)] = (0.9, 0.999)
    eps: Number = 1e-8
    warmup_epochs: int = 1
    epochs: int = 20
    decay_epochs: int | Number | None = None  # the cosine reaches min_lr here and stays (salsa: 15 of 20)
    batch_size: int = 64
    grad_clip: Number | None = None

    def lr_of(self, tower: Literal["audio", "text", "head"]) -> float:
        """The learning rate of one parameter group (its own, else ``lr``)."""
        own = {"audio": self.lr_audio, "text": self.lr_text, "head": self.lr_head}[tower]
        return float(self.lr if own is None else own)

    @property
    def decay_end(self) -> float:
        """The epoch where the cosine reaches ``min_lr`` (``decay_epochs``, default ``epochs``)."""
        return float(self.epochs if self.decay_epochs is None else self.decay_epochs)


class TrainerConfig(Section):
    accelerator: Text = "auto"
    devices: int | Text | Annotated[tuple[int, ...], BeforeValidator(_as_tuple)] = 1
    num_nodes: int = 1
    strategy: Text = "auto"
    precision: Text | int = "32-true"
    compile: bool = False  # torch.compile the towers' forward passes (GPU training; first steps compile)
    sync_batchnorm: bool = False  # several GPUs: BatchNorm statistics over the global batch (cnn, crnn, mn)
    progress_bar: bool = True
    log_every_n_steps: int = 10
    eval_batch_size: int = 32
    # checkpoints/last.ckpt every this many optimiser steps within an epoch (and at every epoch end),
    # so a killed run loses little when started again; 0: at epoch ends only
    checkpoint_every_n_steps: int = 200


#: (key, bound, strict): values that would make a run meaningless (an untrained model, no batches).
_RANGES = (
    ("optim.epochs", 1, False), ("optim.batch_size", 1, False), ("optim.lr", 0, True), ("optim.min_lr", 0, False),
    ("optim.lr_audio", 0, False), ("optim.lr_text", 0, False), ("optim.lr_head", 0, False),
    ("optim.warmup_epochs", 0, False), ("optim.decay_epochs", 0, True), ("trainer.eval_batch_size", 1, False),
    ("data.num_workers", 0, False), ("data.max_seconds", 0, True), ("trainer.num_nodes", 1, False),
    ("model.embed_dim", 1, False),
)


class Config(Section):
    """One experiment. Stage 1 and stage 2 are the same schema: stage 2 sets ``init_from`` (a stage-1
    model) and ``teachers`` (teacher embedding files) and moves weight from ``loss.loss_weight`` to
    ``loss.distill_weight``."""

    seed: int = 0
    out_dir: Text | None = None  # None: runs/{config name}-{date-time}, a fresh folder per run
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    init_from: Text | None = None  # a soundsift model file whose weights initialise this run (stage 2)
    teachers: Texts = ()  # teacher embedding files (soundsift teachers); M = len(teachers)
    estimator: EstimatorConfig = EstimatorConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="before")
    @classmethod
    def _estimator_shorthand(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("estimator"), str):  # estimator=NAME
            return {**value, "estimator": {"name": value["estimator"]}}
        return value

    @model_validator(mode="after")
    def _meaningful(self) -> Config:
        """Refuse values that would make a run meaningless (ConfigError naming the key)."""
        loss, optim = self.loss, self.optim
        if loss.tau <= 0:
            raise ConfigError("loss.tau must be > 0")
        self._check_estimator()
        if loss.loss_weight == 0 and loss.distill_weight == 0:
            raise ConfigError("loss.loss_weight and loss.distill_weight are both 0: nothing to train")
        if self.data.captions_per_epoch not in ("all", "one"):
            raise ConfigError("data.captions_per_epoch must be 'all' or 'one'")
        if optim.optimizer not in ("adam", "adamw"):
            raise ConfigError("optim.optimizer must be 'adam' or 'adamw'")
        if optim.decay_epochs is not None and not optim.warmup_epochs <= optim.decay_epochs <= optim.epochs:
            raise ConfigError(f"optim.decay_epochs must lie between optim.warmup_epochs ({optim.warmup_epochs}) "
                              f"and optim.epochs ({optim.epochs}), got {optim.decay_epochs}")
        for key, low, strict in _RANGES:
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value is not None and (value <= low if strict else value < low):
                raise ConfigError(f"{key} must be {'>' if strict else '>='} {low}, got {value!r}: "
                                  "the run would be meaningless")
        return self

    def _check_estimator(self) -> None:
        est, teachers = self.estimator, self.teachers
        try:
            record = estimator_record(est.name)
        except UnknownNameError:
            raise ConfigError(f"estimator.name: unknown correspondence estimator {est.name!r}; known: "
                              f"{', '.join(estimator_names())}") from None
        if record.reads_teachers:
            if self.loss.distill_weight > 0 and not teachers:
                raise ConfigError("loss.distill_weight > 0 needs at least one entry in 'teachers' (or an estimator "
                                  "that needs none: estimator.name=caption-similarity or model)")
        elif teachers:
            raise ConfigError(f"estimator.name={est.name} computes its targets from the training split: set "
                              f"teachers=[] (to combine it with teacher files, write it with `soundsift teachers "
                              f"--estimator {est.name}` and use estimator.name=mix)")
        if record.weighted:
            weights = est.weights
            if weights is None or len(weights) != len(teachers) or not all(
                    isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
                shown = None if weights is None else list(weights)
                raise ConfigError(f"estimator.name={est.name} needs estimator.weights: {len(teachers)} numbers > 0, "
                                  f"one per entry of teachers, got {shown!r}")
        elif est.weights is not None:
            raise ConfigError(f"estimator.weights is for estimator.name=mix (the estimator is {est.name})")
        if record.one_model and not est.model:
            raise ConfigError(f"estimator.name={est.name} needs estimator.model: a model file or a published name "
                              "such as zero-shot")

    @property
    def distills(self) -> bool:
        """Stage 2: the loss has a distillation term (its targets: teachers or an estimator)."""
        return self.loss.distill_weight > 0

    def to_dict(self) -> dict[str, Any]:
        """The config as the nested dict ``config.yaml`` holds (lists, encoder specs as written)."""
        return _plain(self.model_dump())

    def replace(self, **changes: Any) -> Config:
        """A copy with top-level fields replaced (sections given as section objects), validated."""
        return type(self).model_validate({**dict(self), **changes})


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what YAML writes and old config files hold)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
