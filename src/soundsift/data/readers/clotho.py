"""ClothoV2(.1) reader: ``clotho_captions_{split}.csv`` plus a folder of WAV files per split.

Layout under ``root`` (Zenodo record 4783391, after extracting ``clotho_audio_{split}.7z`` in ``root``)::

    root/clotho_captions_{split}.csv      file_name,caption_1,...,caption_5 (UTF-8, optional BOM)
    root/clotho_metadata_{split}.csv      ISO-8859-1; see read_clotho_metadata
    root/{split}/*.wav                    what the published archives extract to

Also accepted, in this order of preference, for the audio folder: ``root/{split}/{split}/`` (an
extraction into a folder named after the split), ``root/{split}/``, ``root/clotho_audio_{split}/{split}/``,
``root/clotho_audio_{split}/`` (``7z e`` into a folder named after the archive), and
``root/clotho_audio_files/{split}/`` (aac-datasets' layout); the first that holds an audio file wins.
The CSVs may also sit in ``root/clotho_csv_files/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from soundsift.data.readers.common import (
    AudioDir,
    audio_problem,
    canonical_split,
    columns_error,
    first_audio_dir,
    nfc,
    read_csv_table,
)
from soundsift.data.records import Clip, Problem, SplitData
from soundsift.names import SPLITS

_CAPTION_COLUMN = re.compile(r"caption_(\d+)$")


def clotho_split(split: str) -> str:
    """The published split name for ``split`` (accepts train/val/test and dev/valid/eval aliases)."""
    return canonical_split(split, SPLITS, "Clotho", " (or train/val/test)")


def clotho_csv_path(root: Path, kind: str, split: str) -> Path:
    """Where ``clotho_{kind}_{split}.csv`` is (kind: captions or metadata); ``root/...`` if absent."""
    name = f"clotho_{kind}_{split}.csv"
    for folder in (root, root / "clotho_csv_files"):
        if (folder / name).is_file():
            return folder / name
    return root / name


def clotho_audio_dir(root: str | Path, split: str) -> Path | None:
    """The folder holding the WAV files of ``split`` (see the module docstring), or None if none exists."""
    root, split = Path(root), clotho_split(split)
    return first_audio_dir(
        [
            root / split / split,
            root / split,
            root / f"clotho_audio_{split}" / split,
            root / f"clotho_audio_{split}",
            root / "clotho_audio_files" / split,
        ]
    )


def read_clotho(root: str | Path, split: str, check_audio: bool = False) -> SplitData:
    """Read one ClothoV2 split into clips (clip_id = file_name), in CSV row order, captions in column order.

    A captions CSV that is missing or lacks ``file_name`` and ``caption_N`` columns raises DatasetError
    naming the file (and the columns found). Row-level trouble is recorded as a Problem and skipped, so
    a long job can go on: an empty or missing caption (that caption is dropped), a row with extra fields,
    a duplicate file name (later rows dropped), a clip without any caption, a missing audio file and,
    with ``check_audio=True``, audio that soundfile cannot open (the clip is dropped). ``Problem.file``
    is the CSV and ``Problem.row`` the spreadsheet row: the header is row 1, the first clip row 2.
    Without ``check_audio`` only existence is checked (cheap); with it every file's header is read.
    The CSV is read as UTF-8 (BOM allowed), falling back to ISO-8859-1 when it is not valid UTF-8.
    """
    root, split = Path(root), clotho_split(split)
    csv_path = clotho_csv_path(root, "captions", split)
    header, rows = read_csv_table(csv_path, encodings=("utf-8-sig", "iso-8859-1"))
    numbered = [(int(m.group(1)), i) for i, h in enumerate(header) if (m := _CAPTION_COLUMN.match(h))]
    if "file_name" not in header or not numbered:
        raise columns_error(csv_path, "file_name, caption_1, ..., caption_5", header)
    name_col = header.index("file_name")
    caption_cols = [(f"caption_{n}", i) for n, i in sorted(numbered)]

    audio_dir = AudioDir(clotho_audio_dir(root, split))
    clips: list[Clip] = []
    problems: list[Problem] = []
    first_row: dict[str, int] = {}
    file = str(csv_path)
    if audio_dir.path is None:
        looked = f"{root / split}/ or {root / f'clotho_audio_{split}'}/"
        problems.append(Problem(file, None, f"no audio folder for split {split!r}; looked for {looked}"))

    for row, values in rows:
        if len(values) > len(header):
            problems.append(
                Problem(
                    file,
                    row,
                    f"{len(values)} fields for {len(header)} columns (unquoted comma?); row skipped",
                )
            )
            continue
        values = values + [""] * (len(header) - len(values))
        file_name = values[name_col].strip()
        if not file_name:
            problems.append(Problem(file, row, "empty file_name; row skipped"))
            continue
        key = nfc(file_name)
        if key in first_row:
            problems.append(
                Problem(
                    file,
                    row,
                    f"duplicate file_name {file_name!r} (first at row {first_row[key]}); row skipped",
                )
            )
            continue
        first_row[key] = row
        captions: list[str] = []
        for col_name, col in caption_cols:
            text = values[col].strip()
            if text:
                captions.append(text)
            else:
                problems.append(Problem(file, row, f"{col_name} of {file_name!r} is empty; caption skipped"))
        if not captions:
            problems.append(Problem(file, row, f"{file_name!r} has no caption; clip skipped"))
            continue
        if audio_dir.path is None:
            continue  # reported once above
        path = audio_dir.find(file_name)
        why = audio_problem(path or audio_dir.path / file_name, check_audio)
        if path is None or why is not None:
            problems.append(Problem(file, row, f"{why}; clip skipped"))
            continue
        clips.append(Clip(clip_id=file_name, path=path, captions=tuple(captions)))
    return SplitData(name=f"clotho/{split}", clips=clips, problems=problems)


def read_clotho_metadata(root: str | Path, split: str) -> dict[str, dict[str, str]]:
    """The metadata CSV of ``split`` as ``{file_name: {column: value}}``, in file order.

    The published ClothoV2 metadata files are ISO-8859-1 (Latin-1), not UTF-8; reading them as UTF-8
    fails or garbles accented names. A file that is valid UTF-8 (someone re-saved it) is read as UTF-8,
    anything else as ISO-8859-1. Columns include keywords, sound_id, sound_link, start_end_samples,
    manufacturer and license. Raises DatasetError naming the file if it is missing or has no file_name.
    """
    root, split = Path(root), clotho_split(split)
    path = clotho_csv_path(root, "metadata", split)
    header, rows = read_csv_table(path, encodings=("utf-8-sig", "iso-8859-1"))
    table = list(rows)
    if "file_name" not in header:
        raise columns_error(path, "file_name, keywords, sound_id, ...", header)
    out: dict[str, dict[str, str]] = {}
    for _, values in table:
        record = dict(zip(header, values))
        out.setdefault(record["file_name"].strip(), record)
    return out
