"""Dataset readers by name, and combining datasets.

``READERS`` maps a format name to its reader ``(root, split, **options) -> SplitData``; the readers are
imported on first use. Add a format with ``register_reader("name", "module:function")``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from soundsift.data.records import Clip, Problem, SplitData
from soundsift.errors import DatasetError
from soundsift.registry import Registry

READERS = Registry("dataset format")
READERS.register("clotho", "soundsift.data.readers.clotho:read_clotho")
READERS.register("audiocaps", "soundsift.data.readers.audiocaps:read_audiocaps")
READERS.register("wavcaps", "soundsift.data.readers.wavcaps:read_wavcaps")
READERS.register("folder", "soundsift.data.readers.folder:read_folder")
register_reader = READERS.register


def read_split(format: str, root: str | Path, split: str | None, **kw: Any) -> SplitData:
    """Read one split of a dataset in ``format`` (a name in READERS); extra keywords go to the reader."""
    reader = READERS.get(format)
    return reader(root, split, **kw)


def combine(splits: list[SplitData] | dict[str, SplitData], name: str) -> SplitData:
    """Concatenate splits (e.g. ClothoV2 + AudioCaps + WavCaps train for pre-training) into one.

    Each clip_id gets a prefix so ids stay unique across datasets: with a list, the prefix is the
    split's own name, which readers set to ``"{dataset}/{split}"`` (``"clotho/development/a.wav"``);
    with a dict, the key (``{"clotho": dev, "audiocaps": train}`` gives ``"clotho/a.wav"``).
    Problems are kept unchanged. Raises DatasetError (a ValueError) on a repeated prefix or clip_id.
    """
    items = list(splits.items()) if isinstance(splits, dict) else [(s.name, s) for s in splits]
    prefixes: set[str] = set()
    ids: set[str] = set()
    clips: list[Clip] = []
    problems: list[Problem] = []
    for prefix, split in items:
        if prefix in prefixes:
            raise DatasetError(f"combine: prefix {prefix!r} appears twice; give each dataset its own name")
        prefixes.add(prefix)
        for clip in split.clips:
            clip_id = f"{prefix}/{clip.clip_id}"
            if clip_id in ids:
                raise DatasetError(f"combine: clip_id {clip_id!r} occurs twice")
            ids.add(clip_id)
            clips.append(replace(clip, clip_id=clip_id))
        problems.extend(split.problems)
    return SplitData(name=name, clips=clips, problems=problems)
