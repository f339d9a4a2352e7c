"""Where a moment benchmark's files lie: a split's annotation file and each recording's audio, in the
layouts Clotho-Moment and CASTELLA are published in and in ``synth --moments``' own.

Annotations (both datasets): lighthouse's JSON lines, ``clotho_moment_{train,val,test}_release.jsonl`` and
``castella_{train,val,test}_release.jsonl``, in the data root or under ``data/clotho_moment/`` /
``data/castella/`` (lighthouse's repository layout, so its ``data`` folder can be the root).

Audio, looked up by the annotation's ``vid`` (any audio type soundsift reads):

- Clotho-Moment: the audio is published as a WebDataset on Hugging Face (lighthouse-emnlp2024/Clotho-Moment);
  a public converter of it names the files by the vid without its decimal points (``Singapore_0.0_60.0``
  -> ``Singapore_00_600.wav``; not checked here), so both spellings are tried, in a folder per split (``development`` /
  ``train`` ..., also under ``audio/``), in ``audio/`` or in the root (``synth --moments`` writes
  ``{development,validation,evaluation}/{vid}.wav``).
- CASTELLA: the dataset's downloader (github h-munakata/CASTELLA-audio, ``script/download.py``) writes
  every split's recordings to ``download/audio/{YouTube id}.wav`` (32 kHz mono, at most the first 300 s),
  and the vid is that id; ``download/audio``, ``audio``, a folder per split and the root are tried.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from soundsift.data.readers.common import AudioDir
from soundsift.data.readers.moments import MomentRecording, SkippedLine, read_moment_annotations
from soundsift.data.synth.moments import LIGHTHOUSE_SPLIT, moment_split
from soundsift.errors import DatasetError


def _no_dots(vid: str) -> tuple[str, ...]:
    return (vid, vid.replace(".", "")) if "." in vid else (vid,)


@dataclass(frozen=True)
class MomentLayout:
    """One dataset's published layout. Paths are relative to the data root; ``{split}`` is soundsift's
    split name (development/validation/evaluation), ``{lh}`` lighthouse's (train/val/test)."""

    name: str
    annotation: str  # file name
    annotation_dirs: tuple[str, ...]
    audio_dirs: tuple[str, ...]
    stems: Callable[[str], tuple[str, ...]] = field(default=lambda vid: (vid,))


LAYOUTS = (
    MomentLayout("clotho-moment", "clotho_moment_{lh}_release.jsonl", (".", "data/clotho_moment", "clotho_moment"),
                 ("{split}", "{lh}", "audio/{split}", "audio/{lh}", "audio", "."), _no_dots),
    MomentLayout("castella", "castella_{lh}_release.jsonl", (".", "data/castella", "castella"),
                 ("download/audio", "audio", "{split}", "{lh}", "audio/{lh}", ".")),
)


class MomentData:
    """One split of a moment benchmark on disk: its annotation file and its recordings' audio files."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root, self.split = Path(root), moment_split(split)
        lh = LIGHTHOUSE_SPLIT[self.split]
        found = [(layout, self.root / d / layout.annotation.format(lh=lh)) for layout in LAYOUTS
                 for d in layout.annotation_dirs if (self.root / d / layout.annotation.format(lh=lh)).is_file()]
        if not found:
            names = " or ".join(layout.annotation.format(lh=lh) for layout in LAYOUTS)
            dirs = ", ".join(dict.fromkeys(d for layout in LAYOUTS for d in layout.annotation_dirs))
            raise DatasetError(f"{self.root}: no moment annotations for the {self.split} split: looked for {names} "
                               f"in {dirs} (Clotho-Moment/CASTELLA as lighthouse publishes them)")
        if len({layout.name for layout, _ in found}) > 1:
            raise DatasetError(f"{self.root}: both {found[0][1].name} and {found[-1][1].name} are here; give the "
                               "folder of one dataset")
        self.layout, self.annotations = found[0]
        self._dirs: list[AudioDir] | None = None

    def audio_dirs(self) -> list[AudioDir]:
        """The layout's existing audio folders for this split, in lookup order (listed once)."""
        if self._dirs is None:
            lh = LIGHTHOUSE_SPLIT[self.split]
            paths = dict.fromkeys((self.root / d.format(split=self.split, lh=lh)).resolve()
                                  for d in self.layout.audio_dirs)
            self._dirs = [AudioDir(p) for p in paths if p.is_dir()]
        return self._dirs

    def audio(self, vid: str) -> Path:
        """Recording ``vid``'s audio file; a one-line DatasetError naming the file expected when missing."""
        stems = self.layout.stems(vid)
        for folder in self.audio_dirs():
            for stem in stems:
                path = folder.find_stem(stem)
                if path is not None:
                    return path
        lh = LIGHTHOUSE_SPLIT[self.split]
        looked = ", ".join(dict.fromkeys(d.format(split=self.split, lh=lh) for d in self.layout.audio_dirs))
        names = " or ".join(f"{s}.wav" for s in stems)
        raise DatasetError(f"{self.root}: no audio for recording {vid!r} ({self.layout.name}, {self.split}): expected "
                           f"{names} (or another audio type) in one of {looked}")


def load_moment_split(root: str | Path, split: str, skip_invalid: bool = False,
                      log: Callable[[str], None] | None = None) -> tuple[MomentData, list[MomentRecording]]:
    """A split's files and annotations. With ``skip_invalid`` a bad annotation line is left out and
    reported through ``log`` (default: stderr), one line each and then the count; else it is refused."""
    data = MomentData(root, split)
    skipped: list[SkippedLine] | None = [] if skip_invalid else None
    recordings = read_moment_annotations(data.annotations, skipped=skipped)
    report_skipped(data.annotations, skipped or [], sum(len(r.queries) for r in recordings), log)
    return data, recordings


def report_skipped(path: str | Path, skipped: Sequence[SkippedLine], kept: int,
                   log: Callable[[str], None] | None = None) -> None:
    """One line per skipped annotation line, then the count (``log``: default stderr); nothing if none."""
    if not skipped:
        return
    say = log or (lambda message: print(message, file=sys.stderr))
    for line in skipped:
        say(f"skipped: {line}")
    say(f"{path}: skipped {len(skipped)} of {len(skipped) + kept} annotation lines")
