"""How specific the generated benchmark's captions are: the knob calibrated against ClothoV2.

A style fixes how many events a clip holds and, per caption role, how often a caption names an event's
attributes, its position and the order of events. The more a caption says, the fewer clips it truly
describes. ``broad`` is the original generator (one "minimal" caption per clip, true of every clip with
that sound: 8.8 relevant clips per caption among 150); the moment benchmark and the ``tiny`` preset keep
it, so their files stay byte-identical. ``clotho`` was chosen on the development split (600 clips) to
bring the mean number of relevant clips per caption close to that of the DCASE 2025 annotations of
ClothoV2's evaluation split (3.00 per query; :data:`soundsift.data.stats.CLOTHO_REFERENCE`), and never
by the size of any training gain. docs/benchmark.md gives the measured statistics of both.
"""

from __future__ import annotations

from dataclasses import dataclass

from soundsift.errors import ConfigError

__all__ = ["STYLES", "CaptionStyle", "get_style"]


@dataclass(frozen=True)
class CaptionStyle:
    """``events_p``: probability of 1, 2, 3 events per clip; ``roles``: the five captions' roles (in a
    random order per clip); ``role_p``: per role, the chance of naming each attribute, the position and
    the order of events ("full" names every event, "partial" a subset, "minimal" one and nothing else)."""

    name: str
    events_p: tuple[float, float, float]
    roles: tuple[str, str, str, str, str]
    role_p: tuple[tuple[str, tuple[float, float, float]], ...]

    def probabilities(self, role: str) -> tuple[float, float, float]:
        """(attribute p, position p, order p) of ``role``."""
        return dict(self.role_p)[role]


STYLES: dict[str, CaptionStyle] = {
    "broad": CaptionStyle(
        "broad", (0.3, 0.45, 0.25), ("full", "partial", "partial", "partial", "minimal"),
        (("full", (0.6, 0.5, 0.8)), ("partial", (0.35, 0.3, 0.5)), ("minimal", (0.0, 0.0, 0.0))),
    ),
    # Chosen on the development split of 600 clips (seed 0) from a grid over the events per clip, the
    # caption roles and their probabilities: mean relevant clips per caption 2.75 (ClothoV2: 3.00).
    "clotho": CaptionStyle(
        "clotho", (0.0, 0.6, 0.4), ("full", "full", "full", "full", "full"),
        (("full", (0.3, 0.3, 0.5)),),
    ),
}


def get_style(name: str) -> CaptionStyle:
    if name not in STYLES:
        raise ConfigError(f"unknown caption style {name!r}; use one of {', '.join(STYLES)}")
    return STYLES[name]
