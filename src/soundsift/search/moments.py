"""Moments in long recordings as search reports them: ``FILE@START-END`` specs, cutting a moment out
of a wave, ``mm:ss`` spans, and ``Hit`` (one search result). The windows and their merging into moments
live in ``soundsift.spans`` (shared with training's sliding-window baseline) and are re-exported here."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsift.errors import ConfigError
from soundsift.spans import (  # noqa: F401  (re-exported: the search side's names)
    DEFAULT_WINDOW,
    MOMENT_RATIO,
    NMS_IOU,
    Moment,
    check_windows,
    default_windows,
    merge_moments,
    temporal_iou,
    window_spans,
)

_MOMENT_RE = re.compile(r"^(?P<file>.+)@(?P<start>\d+(?:\.\d*)?)-(?P<end>\d+(?:\.\d*)?)$")


def parse_moment_spec(spec: str | Path) -> tuple[str, float | None, float | None]:
    """``FILE@START-END`` (seconds) -> (FILE, START, END); anything else (an existing file whose name
    has an ``@`` included) -> (spec, None, None)."""
    text = str(spec)
    match = _MOMENT_RE.match(text)
    if match is None or Path(text).exists():
        return text, None, None
    return match["file"], float(match["start"]), float(match["end"])


def cut_moment(wave: np.ndarray, sample_rate: int, spec: str, start: float, end: float) -> np.ndarray:
    """The samples of ``wave`` from ``start`` to ``end`` seconds; ConfigError naming ``spec`` when
    start >= end or the span leaves the file."""
    duration = len(wave) / sample_rate
    if start >= end:
        raise ConfigError(f"{spec}: the moment's start {start:g} s is not before its end {end:g} s")
    if end > duration + 1e-3:
        raise ConfigError(f"{spec}: the moment ends at {end:g} s, after the end of the file ({duration:.3f} s)")
    return wave[int(round(start * sample_rate)): int(round(min(end, duration) * sample_rate))]


def format_span(start: float, end: float) -> str:
    """``mm:ss-mm:ss`` (whole seconds, rounded down / up)."""
    def mmss(t: float) -> str:
        return f"{int(t) // 60:02d}:{int(t) % 60:02d}"
    return f"{mmss(math.floor(start))}-{mmss(math.ceil(end))}"


@dataclass(frozen=True)
class Hit:
    """One search result: the same fields in ``search --json`` and ``GET /api/search``. ``start`` and
    ``end`` (seconds) span its best moment (the whole file when it has no windows); ``moments``: up to N
    moments, best first, when a search asks for them."""

    rank: int
    id: int
    path: str
    score: float
    duration: float
    start: float = 0.0
    end: float = 0.0
    moments: list[dict[str, float]] | None = None

    def to_dict(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "moments"}
        return out if self.moments is None else {**out, "moments": self.moments}

    @property
    def is_moment(self) -> bool:
        """True when the span is a part of the file, not all of it."""
        return self.start > 0.0005 or self.end < self.duration - 0.0005
