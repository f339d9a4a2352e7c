"""Seconds per stage of an index build (``index build --stats``): listing, hashing, decoding, resampling,
thumbnails, model, writing. Decoding-side stages are summed over the decoding workers (CPU seconds in
parallel), the others are wall-clock seconds of the build's main thread."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

STAGES = ("listing", "hashing", "decoding", "resampling", "thumbnails", "model", "writing")


@dataclass
class StageTimes:
    listing: float = 0.0
    hashing: float = 0.0
    decoding: float = 0.0
    resampling: float = 0.0
    thumbnails: float = 0.0
    model: float = 0.0
    writing: float = 0.0

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, stage, getattr(self, stage) + time.perf_counter() - start)

    def add_decoded(self, times: tuple[float, float, float, float]) -> None:
        """A decoded file's (hashing, decoding, resampling, thumbnail) seconds."""
        self.hashing += times[0]
        self.decoding += times[1]
        self.resampling += times[2]
        self.thumbnails += times[3]

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def format_stages(stages: dict[str, float], audio_seconds: float | None = None) -> str:
    """One line per stage: seconds, and times real time when the audio's duration is known."""
    lines = []
    for name in STAGES:
        seconds = float(stages.get(name, 0.0))
        rtf = f"  ({audio_seconds / seconds:,.0f}x real time)" if audio_seconds and seconds > 0 else ""
        lines.append(f"  {name:<11} {seconds:9.3f} s{rtf}")
    return "\n".join(lines)
