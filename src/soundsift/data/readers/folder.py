"""Your own data: a folder of audio files plus a CSV or JSONL of ``file,caption[,split]``.

    root/captions.csv        file,caption[,split]   (UTF-8, BOM allowed; several rows per file =
                                                    several captions; ``file_name`` or ``path`` may
                                                    stand for ``file``)
    root/captions.jsonl      {"file": ..., "caption": ... or [...], "split": ...} one object per line
    root/<file>              audio, any format soundfile reads, paths relative to root

``captions.csv`` is used when both exist. File paths must stay inside ``root``: absolute paths and
paths whose ``..`` parts climb out of it are rejected (checked on the text, so a symlink the user put
inside root is followed). ``/`` and ``\\`` both separate folders.

Splits: a ``split`` value is matched by its role, so ``train``/``training``/``development``/``dev``,
``val``/``validation``/``valid`` and ``test``/``testing``/``evaluation``/``eval`` (any case) all work
with the config defaults. Without a ``split`` column, ``HOLD_OUT`` (10%) of the files, at least one,
go to validation and as many to test, the rest to training; which files is decided by the SHA-1 of
their relative path, so it is the same on every run and machine.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

from soundsift.data.readers.common import (
    ROLES,
    SPLIT_SYNONYMS,
    audio_problem,
    columns_error,
    nfc,
    read_csv_table,
    split_role,
)
from soundsift.data.records import Clip, Problem, SplitData
from soundsift.errors import DatasetError

DEFAULT_FILES = ("captions.csv", "captions.jsonl")
HOLD_OUT = 0.1  # share of the files held out for validation, and again for test, without a split column
#: How train/val/test come about without a split column (``hold_out``), as ``data info`` tells it.
HOLD_OUT_RULE = (f"no split column: val and test were held out automatically, {HOLD_OUT:.0%} of the files each "
                 "(at least one), chosen by the SHA-1 of their relative path (no seed: the same files on every "
                 "run and machine); train is the rest")
FILE_KEYS = ("file", "file_name", "path")


def safe_relative(path: str) -> str | None:
    """``path`` normalised to a POSIX path relative to root, or None if it is absolute or escapes root."""
    text = path.strip().replace("\\", "/")
    if not text or text.startswith("/") or PureWindowsPath(path.strip()).drive:
        return None
    norm = posixpath.normpath(text)
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm


def find_captions_file(root: Path, captions_file: str | Path | None) -> Path:
    """The captions file: ``captions_file`` (relative to root unless absolute) or the default names."""
    if captions_file is not None:
        path = Path(captions_file)
        return path if path.is_absolute() else root / path
    for name in DEFAULT_FILES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"{root}: no captions file; expected {' or '.join(DEFAULT_FILES)} (columns file,caption[,split])"
    )


Row = tuple[int, str | None, object, str | None]  # (row, file or None if unparsable, caption(s), split)


def _csv_rows(path: Path) -> tuple[bool, Iterator[Row]]:
    """Whether the CSV has a split column, and its rows."""
    header, rows = read_csv_table(path)
    lowered = [h.lower() for h in header]
    file_col = next((lowered.index(k) for k in FILE_KEYS if k in lowered), None)
    if file_col is None or "caption" not in lowered:
        raise columns_error(path, "file, caption[, split]", header)
    cap_col = lowered.index("caption")
    split_col = lowered.index("split") if "split" in lowered else None

    def gen() -> Iterator[Row]:
        for row, values in rows:
            values = values + [""] * (len(header) - len(values))
            split = values[split_col].strip() if split_col is not None else None
            yield row, values[file_col], values[cap_col], split

    return split_col is not None, gen()


def _read_rows(path: Path) -> tuple[bool, Iterator[Row]]:
    """Whether rows may carry a split, and the rows, for a CSV or a JSONL captions file."""
    if path.suffix.lower() != ".jsonl":
        return _csv_rows(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    rows = list(_jsonl_rows(path))
    return any(r[3] is not None for r in rows), iter(rows)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not valid UTF-8 text ({exc})") from exc
    for row, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield row, None, f"not valid JSON ({exc.msg})", None
            continue
        if not isinstance(obj, dict):
            yield row, None, "line is not a JSON object", None
            continue
        file = next((obj[k] for k in FILE_KEYS if k in obj), None)
        caption = obj.get("caption", obj.get("captions"))
        split = obj.get("split")
        yield row, "" if file is None else str(file), caption, None if split is None else str(split).strip()


def read_folder(
    root: str | Path,
    split: str | None = None,
    captions_file: str | Path | None = None,
    check_audio: bool = False,
) -> SplitData:
    """Read your own captioned audio; ``split=None`` takes every row, else only rows of that split.

    clip_id is the file's normalised relative path; clips come in first-seen order, captions in row
    order. A split is matched by role (any usual spelling); without a ``split`` column, train/val/test
    are the deterministic hold-out described in the module docstring. A split with no rows raises
    DatasetError naming the spellings looked for and the split names the file has, as does a CSV
    without ``file`` and ``caption`` columns. Row-level trouble is a Problem and the row is skipped: an empty or unsafe path,
    an empty caption, a repeated (file, caption) pair, a file listed under two splits, missing or (with
    ``check_audio``) unreadable audio. ``Problem.row``: CSV spreadsheet row (header = 1) or JSONL line.
    """
    root = Path(root)
    path = find_captions_file(root, captions_file)
    file = str(path)
    has_split, row_iter = _read_rows(path)
    rows = list(row_iter)
    wanted = None if split is None else _split_filter(path, split, has_split, rows)

    problems: list[Problem] = []
    captions: dict[str, list[str]] = {}
    first_split: dict[str, tuple[str | None, int]] = {}
    seen_pairs: set[tuple[str, str]] = set()
    for row, raw_file, raw_caption, row_split in rows:
        if raw_file is None:
            problems.append(Problem(file, row, f"{raw_caption}; row skipped"))
            continue
        rel = safe_relative(raw_file)
        if rel is None:
            why = (
                "empty file path"
                if not raw_file.strip()
                else f"path {raw_file!r} is absolute or escapes the root folder"
            )
            problems.append(Problem(file, row, f"{why}; row skipped"))
            continue
        rel = nfc(rel)
        if rel in first_split and first_split[rel][0] != row_split:
            other, other_row = first_split[rel]
            problems.append(
                Problem(
                    file,
                    row,
                    f"{rel!r} is in split {row_split!r} here but {other!r} at row {other_row}; row skipped",
                )
            )
            continue
        first_split.setdefault(rel, (row_split, row))
        if wanted is not None and not wanted(rel, row_split):
            continue
        texts = raw_caption if isinstance(raw_caption, list) else [raw_caption]
        for text in texts:
            text = text.strip() if isinstance(text, str) else ""
            if not text:
                problems.append(Problem(file, row, f"empty caption for {rel!r}; caption skipped"))
            elif (rel, text) in seen_pairs:
                problems.append(Problem(file, row, f"caption repeated for {rel!r}; skipped"))
            else:
                seen_pairs.add((rel, text))
                captions.setdefault(rel, []).append(text)

    clips: list[Clip] = []
    for rel, texts in captions.items():
        audio = root / rel
        why = audio_problem(audio, check_audio)
        if why is not None:
            problems.append(Problem(file, first_split[rel][1], f"{why}; clip skipped"))
            continue
        clips.append(Clip(clip_id=rel, path=audio, captions=tuple(texts)))
    return SplitData(name="folder" if split is None else f"folder/{split}", clips=clips, problems=problems)


def _split_filter(path: Path, split: str, has_split: bool, rows: list[Row]):
    """``wanted(rel, row_split)`` for the rows of ``split``; DatasetError if no row would be taken."""
    role = split_role(split)
    spellings = [split] if role is None else list(SPLIT_SYNONYMS[ROLES.index(role)])
    if has_split:
        names = list(dict.fromkeys(s for _, f, _, s in rows if f is not None and s))
        if not any(s == split or (role is not None and split_role(s) == role) for s in names):
            raise DatasetError(
                f"{path}: no rows of split {split!r} (looked for {', '.join(map(repr, spellings))}); "
                f"the file's split names: {', '.join(map(repr, names)) or 'none'}"
            )
        return lambda rel, row_split: row_split == split or (role is not None and split_role(row_split) == role)
    if role is None:
        raise DatasetError(
            f"{path}: split {split!r} requested but the file has no 'split' column (or JSONL field); "
            "without one, 'train', 'val' and 'test' are a fixed hold-out of the files"
        )
    files = list(dict.fromkeys(nfc(r) for _, f, _, _ in rows if f is not None and (r := safe_relative(f))))
    if len(files) < 3:
        raise DatasetError(
            f"{path}: the file has no 'split' column, and {len(files)} file(s) are too few to hold out "
            "validation and test files from; add a split column (train/val/test)"
        )
    assigned = hold_out(files)
    return lambda rel, row_split: assigned.get(rel) == role


def hold_out(files: list[str], share: float = HOLD_OUT) -> dict[str, str]:
    """Relative path -> "train" | "val" | "test": ``share`` of the files (at least one, when there are
    three or more) to each of val and test, chosen by SHA-1 of the path; the rest to train."""
    import hashlib

    order = sorted(files, key=lambda f: hashlib.sha1(f.encode("utf-8")).hexdigest())
    n = max(1, round(share * len(order))) if len(order) >= 3 else 0
    roles = {f: "train" for f in order}
    roles.update({f: "val" for f in order[:n]})
    roles.update({f: "test" for f in order[n:2 * n]})
    return roles


def list_folder_splits(root: str | Path, captions_file: str | Path | None = None) -> list[str]:
    """The split names a folder dataset uses, in first-seen order (empty if it has no split column)."""
    _, rows = _read_rows(find_captions_file(Path(root), captions_file))
    names = [s for _, f, _, s in rows if f is not None and s]
    return list(dict.fromkeys(names))
