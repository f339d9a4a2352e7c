"""The one in-memory form every dataset reader produces: clips with their captions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Clip:
    """One audio file and its captions. ``clip_id`` is unique within its split (ClothoV2: the file name)."""

    clip_id: str
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file or row, kept so that a long job can skip it and report it."""

    file: str
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}, row {self.row}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ReplacedItem:
    """A training item whose clip failed to decode while its batch was made: the item was replaced by
    another one (``replacement``), and ``problem`` says which file failed and why."""

    problem: Problem
    item: int
    replacement: int

    def __str__(self) -> str:
        return f"{self.problem}; training item {self.item} replaced by item {self.replacement}"


@dataclass
class SplitData:
    """The clips of one split plus every problem found while reading it."""

    name: str
    clips: list[Clip]
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_captions(self) -> int:
        return sum(len(c.captions) for c in self.clips)
