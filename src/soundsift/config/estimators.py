"""The correspondence-estimator records: what each estimator is called and what it reads.

Config validation checks ``estimator.name`` and the ``teachers`` it needs from these records without
importing ``soundsift.training`` (the estimators' code, a ``"module:attr"`` target loaded on first use).
``register_estimator`` adds a record; nothing else writes this table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from soundsift.errors import UnknownNameError


@dataclass(frozen=True)
class EstimatorRecord:
    """One estimator: ``target`` (a callable or ``"module:attr"``) and what it reads: teacher files
    (``reads_teachers``), models to embed the split with (``reads_models``: each one more teacher when
    it reads teachers, else the one model it is), a text model (``reads_text_model``), one weight per
    teacher (``weighted``)."""

    name: str
    target: Callable[..., Any] | str
    reads_teachers: bool
    reads_models: bool = False
    reads_text_model: bool = False
    weighted: bool = False

    @property
    def one_model(self) -> bool:
        """It is one model's embeddings (``estimator.model``, one ``--model``), not a combination."""
        return self.reads_models and not self.reads_teachers

    def load(self) -> Callable[..., Any]:
        """The estimator function (imported on first use when the target is a string)."""
        if not isinstance(self.target, str):
            return self.target
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


_TARGETS = "soundsift.training.estimators"
_RECORDS: dict[str, EstimatorRecord] = {
    r.name: r for r in (
        EstimatorRecord("ensemble", f"{_TARGETS}:ensemble", reads_teachers=True, reads_models=True),
        EstimatorRecord("mix", f"{_TARGETS}:mix", reads_teachers=True, reads_models=True, weighted=True),
        EstimatorRecord("caption-similarity", f"{_TARGETS}:caption_similarity", reads_teachers=False,
                        reads_text_model=True),
        EstimatorRecord("model", f"{_TARGETS}:model_teacher", reads_teachers=False, reads_models=True),
    )
}


def register_estimator(record: EstimatorRecord) -> EstimatorRecord:
    """Add ``record`` (configs and ``soundsift teachers --estimator`` can then name it)."""
    known = _RECORDS.get(record.name)
    if known is not None and known != record:
        raise ValueError(f"correspondence estimator {record.name!r} is already registered")
    _RECORDS[record.name] = record
    return record


def unregister_estimator(name: str) -> None:
    """Remove a registered estimator (tests, plug-ins that clean up)."""
    _RECORDS.pop(name, None)


def estimator_names() -> list[str]:
    return sorted(_RECORDS)


def estimator_record(name: str) -> EstimatorRecord:
    """The record of ``name``; UnknownNameError (one line) lists the known ones."""
    if name not in _RECORDS:
        raise UnknownNameError(f"unknown correspondence estimator {name!r}; known: {', '.join(estimator_names())}")
    return _RECORDS[name]
