"""Finding and decoding a sound library's files for an index build (``search.build``).

``scan_audio_files`` walks the library and says why a file cannot be used (``check_library`` refuses
a library with no audio at all); ``decode_file`` hashes, decodes
and draws the thumbnail of one file, in a thread or in a worker process (``search.decoding``),
and says what it found as a typed, picklable result (``Decoded``, ``Known``: content already indexed,
``Failed``: the reason as text, so that it crosses process boundaries); ``relative_reason`` words an
error for the build report (paths relative to the library).
"""

from __future__ import annotations

import os
import time
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsift.audio import AUDIO_EXTENSIONS, read_audio, resample_audio
from soundsift.digest import file_digest
from soundsift.errors import SearchIndexError
from soundsift.search.thumbnails import make_thumbnail

# Audio formats that soundfile cannot decode: reported as skipped rather than silently ignored.
UNSUPPORTED_AUDIO = (".m4a", ".aac", ".wma", ".ape", ".wv", ".amr", ".mka", ".webm", ".mp4", ".3gp", ".ac3")


def scan_audio_files(root: Path, exclude: Path | None = None) -> Iterator[tuple[str, os.stat_result | Exception]]:
    """Audio files under ``root`` in sorted order: (relative POSIX path, stat or why it is unusable).

    Hidden files and folders (".name", e.g. macOS "._x.wav" forks) are ignored, and so is ``exclude``
    (an index inside the library). Symlinks to files are followed; symlinked folders are not (cycles).
    Unreadable folders and audio formats soundfile cannot decode come with an error.
    """
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    walk_errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_errors.append):
        while walk_errors:
            err = walk_errors.pop()
            where = Path(err.filename).relative_to(root).as_posix() if err.filename else "?"
            yield f"{where}/", OSError(f"cannot list the folder: {err.strerror or err}")
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) != exclude_real
        )
        rel_dir = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            lower = name.lower()
            if name.startswith(".") or not lower.endswith(AUDIO_EXTENSIONS + UNSUPPORTED_AUDIO):
                continue
            rel = (rel_dir / name).as_posix()
            if lower.endswith(UNSUPPORTED_AUDIO):
                yield rel, ValueError(f"unsupported audio format {Path(lower).suffix} (readable: "
                                      f"{', '.join(e[1:] for e in AUDIO_EXTENSIONS)}); convert it, e.g. to FLAC")
                continue
            try:
                yield rel, os.stat(os.path.join(dirpath, name))
            except OSError as exc:
                yield rel, OSError(f"cannot stat: {exc.strerror or exc}")
    for err in walk_errors:  # an error on the last folder listed
        where = Path(err.filename).relative_to(root).as_posix() if err.filename else "?"
        yield f"{where}/", OSError(f"cannot list the folder: {err.strerror or err}")


def check_library(root: Path, given: str | Path, exclude: Path | None = None) -> None:
    """Refuse (SearchIndexError naming ``given``) a library that is not a folder or holds no audio file,
    before a model is loaded or an index written (an existing index is never emptied)."""
    if root.is_file():
        raise SearchIndexError(f"{given}: is a file, not a folder; give the folder that holds the audio files")
    if not root.is_dir():
        raise SearchIndexError(f"{given}: audio folder not found")
    if next(scan_audio_files(root, exclude), None) is None:
        raise SearchIndexError(f"no audio files found in {given} (extensions: "
                               f"{', '.join(e[1:] for e in AUDIO_EXTENSIONS)}; hidden files are ignored)")


@dataclass(frozen=True)
class Decoded:
    """A file decoded for embedding: its content hash, waveform, spectrogram thumbnail, and the sample
    rate and channel count it is stored with ((0, 0) when its header does not say)."""

    sha256: str
    wave: np.ndarray
    thumbnail: np.ndarray
    rate: tuple[int, int] = (0, 0)
    #: seconds spent hashing, decoding, resampling and drawing the thumbnail (``index build --stats``)
    times: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Known:
    """A file whose content (``sha256``) is already indexed: hashed only, its embedding is reused."""

    sha256: str


@dataclass(frozen=True)
class Failed:
    """A file that cannot be read or decoded; ``reason`` is the error message."""

    reason: str
    sha256: str = ""


DecodeResult = Decoded | Known | Failed


def decode_file(path: Path, sample_rate: int, known: Container[str] | None = None) -> DecodeResult:
    """Hash and decode one file; a content in ``known`` is hashed only (``Known``). Module level, so that
    it runs in a worker process as well as in a thread."""
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    try:
        sha = file_digest(path)
    except OSError as exc:
        return Failed(f"cannot read: {exc.strerror or exc}")
    if known is not None and sha in known:
        return Known(sha)
    hashing = lap()
    try:
        mono, rate = read_audio(path)
        decoding = lap()
        wave = resample_audio(mono, rate, sample_rate)
    except Exception as exc:  # AudioError, resampler errors, MemoryError on absurd files...
        return Failed(str(exc) or type(exc).__name__, sha)
    resampling = lap()
    thumbnail = make_thumbnail(wave, sample_rate)
    return Decoded(sha, wave, thumbnail, stored_format(path), (hashing, decoding, resampling, lap()))


def stored_format(path: Path) -> tuple[int, int]:
    """(sample rate, channels) from the file's header; (0, 0) when it cannot be read."""
    try:
        import soundfile

        info = soundfile.info(str(path))
        return int(info.samplerate), int(info.channels)
    except Exception:  # a header soundfile cannot parse (the audio itself was decoded another way)
        return 0, 0


def safe_sha(path: Path) -> str:
    try:
        return file_digest(path, "sha256")
    except OSError:
        return ""


def relative_reason(msg: str, root: Path, rel: str) -> str:
    """The error message without the file name in front and without absolute paths (the report
    lists each file by its path relative to the audio root)."""
    full = str(root.joinpath(*rel.split("/")))
    if msg.startswith(full + ": "):
        msg = msg[len(full) + 2 :]
    return msg.replace(str(root) + os.sep, "")
