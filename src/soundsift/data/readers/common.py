"""The small helpers every dataset reader shares: audio folders, CSV tables, split names."""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

from soundsift.audio import AUDIO_EXTENSIONS
from soundsift.errors import ConfigError, DatasetError
from soundsift.names import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT


def nfc(text: str) -> str:
    """Unicode NFC form: CSVs and file systems (macOS writes NFD) may spell the same name differently."""
    return unicodedata.normalize("NFC", text)


class AudioDir:
    """One folder of audio files, listed once, looked up by name or by stem.

    Lookups are Unicode-normalisation tolerant (a CSV in NFC still finds a file stored in NFD) and cost
    one ``os.scandir`` for the whole folder instead of one ``stat`` per clip.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._by_name: dict[str, str] = {}
        self._by_stem: dict[str, list[str]] = {}
        if path is not None and path.is_dir():
            for entry in sorted(path.iterdir()):
                if not entry.is_file():
                    continue
                key = nfc(entry.name)
                self._by_name.setdefault(key, entry.name)
                if entry.suffix.lower() in AUDIO_EXTENSIONS:
                    self._by_stem.setdefault(nfc(entry.stem), []).append(entry.name)

    def __len__(self) -> int:
        return len(self._by_name)

    def find(self, name: str) -> Path | None:
        """The file called ``name`` in this folder, or None."""
        if self.path is None:
            return None
        real = self._by_name.get(nfc(name))
        return None if real is None else self.path / real

    def find_stem(self, stem: str) -> Path | None:
        """The audio file whose name without extension is ``stem`` (any audio extension), or None."""
        if self.path is None:
            return None
        names = self._by_stem.get(nfc(stem))
        return None if not names else self.path / names[0]


def first_audio_dir(candidates: list[Path]) -> Path | None:
    """The first candidate folder that holds an audio file; else the first that exists; else None."""
    existing = [c for c in candidates if c.is_dir()]
    for cand in existing:
        if any(p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS for p in cand.iterdir()):
            return cand
    return existing[0] if existing else None


def audio_problem(path: Path, check_audio: bool) -> str | None:
    """Why ``path`` is unusable as audio, or None. Without ``check_audio`` only existence is checked."""
    if not path.is_file():
        return f"audio file not found: {path}"
    if not check_audio:
        return None
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types for corrupt or unknown files
        return f"unreadable or corrupt audio {path}: {exc}"
    if info.frames <= 0:
        return f"audio file has no samples: {path}"
    return None


def read_csv_table(
    path: Path, encodings: tuple[str, ...] = ("utf-8-sig",)
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """Open a CSV: its stripped header and an iterator of ``(row, values)`` for the non-blank data rows.

    ``row`` follows the spreadsheet convention: the header is row 1, the first data row is row 2 (a
    quoted caption that spans lines still counts as one row). Raises DatasetError naming the file when
    it is missing, empty or not decodable with any of ``encodings`` (tried in order).
    """
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    data = path.read_bytes()
    text: str | None = None
    for encoding in encodings:
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError as exc:
            error = exc
    if text is None:
        raise DatasetError(f"{path}: not valid {' or '.join(encodings)} text ({error})")
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path}: empty file, no header row") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}, row 1: malformed CSV ({exc})") from exc
    header = [h.strip() for h in header]

    def rows() -> Iterator[tuple[int, list[str]]]:
        row = 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetError(f"{path}, row {row + 1}: malformed CSV ({exc})") from exc
            row += 1
            if values and any(v.strip() for v in values):
                yield row, values

    return header, rows()


def columns_error(path: Path, expected: str, found: list[str]) -> DatasetError:
    """The error for a table without the expected columns: names the file, what was expected and found."""
    shown = ", ".join(repr(c) for c in found) if found else "(none)"
    return DatasetError(f"{path}: expected columns {expected}; found columns: {shown}")


#: Synonyms of the three split roles, in (train, val, test) order; each dataset names them its own way.
SPLIT_SYNONYMS = (
    ("train", "training", TRAIN_SPLIT, "dev"),
    ("val", VAL_SPLIT, "valid"),
    ("test", "testing", TEST_SPLIT, "eval"),
)
ROLES = ("train", "val", "test")


def split_role(split: str | None) -> str | None:
    """``"train"``, ``"val"`` or ``"test"`` for any usual spelling of a split (case-insensitive), else None."""
    name = (split or "").strip().lower()
    return next((role for role, synonyms in zip(ROLES, SPLIT_SYNONYMS) if name in synonyms), None)


def canonical_split(split: str, names: Sequence[str], dataset: str, hint: str = "") -> str:
    """The dataset's own name (one of ``names``, in train/val/test order) for ``split`` or a synonym."""
    if split in names:
        return split
    role = split_role(split)
    if role is not None:
        return names[ROLES.index(role)]
    raise ConfigError(f"unknown {dataset} split {split!r}; use one of {', '.join(names)}{hint}")
