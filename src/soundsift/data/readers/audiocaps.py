"""AudioCaps reader: ``{train,val,test}.csv`` (one row per caption) plus audio fetched from AudioSet.

Layout under ``root``::

    root/{split}.csv          audiocap_id,youtube_id,start_time,caption (UTF-8, optional BOM)
    root/audio/{split}/       the clips; ``root/{split}/`` is accepted too

AudioCaps publishes no audio: each user downloads the YouTube segments, and tools name them
differently. For a clip (youtube_id ``YID``, start ``S``) the reader looks, with any audio extension
(.wav, .flac, .ogg, .mp3, ...), for ``YID_S`` (S as written in the CSV, e.g. ``YID_30``; also
``YID_30.0`` / ``YID_30.000``; aac-datasets' naming), ``YYID`` and ``YYID_30.000_40.000`` (AudioSet
style), ``YID`` alone, and finally any of the clip's ``audiocap_id`` values (e.g. ``91139.wav``).
Many AudioCaps videos are gone from YouTube: each missing clip is one Problem, and reading goes on.
"""

from __future__ import annotations

from pathlib import Path

from soundsift.data.readers.common import (
    AudioDir,
    audio_problem,
    canonical_split,
    columns_error,
    first_audio_dir,
    read_csv_table,
)
from soundsift.data.records import Clip, Problem, SplitData

SPLITS = ("train", "val", "test")
COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
SEGMENT_SECONDS = 10.0


def audiocaps_split(split: str) -> str:
    """The AudioCaps split name for ``split`` (accepts development/validation/evaluation aliases)."""
    return canonical_split(split, SPLITS, "AudioCaps")


def audio_stems(youtube_id: str, start_raw: str, start: float, audiocap_ids: list[str]) -> list[str]:
    """Candidate file names without extension for one clip, most specific first (see module docstring)."""
    stems = [f"{youtube_id}_{start_raw}"]
    if start.is_integer():
        stems.append(f"{youtube_id}_{int(start)}")
    stems += [
        f"{youtube_id}_{start:.1f}",
        f"{youtube_id}_{start:.3f}",
        f"Y{youtube_id}",
        f"Y{youtube_id}_{start:.3f}_{start + SEGMENT_SECONDS:.3f}",
        youtube_id,
        *audiocap_ids,
    ]
    return list(dict.fromkeys(stems))


def read_audiocaps(root: str | Path, split: str, check_audio: bool = False) -> SplitData:
    """Read one AudioCaps split; rows are grouped by (youtube_id, start_time) into clips, first seen first.

    clip_id is ``"{youtube_id}_{start_time}"`` with start_time as written in the CSV. A missing CSV or
    one without the four columns raises DatasetError naming the file and the columns found. Row-level
    trouble (empty caption or youtube_id, a start_time that is not a number, a repeated audiocap_id) and
    missing or (with ``check_audio``) unreadable audio are recorded as Problems and skipped.
    ``Problem.row`` is the spreadsheet row (header = row 1); a clip's audio problem carries the row of
    its first caption.
    """
    root, split = Path(root), audiocaps_split(split)
    csv_path = root / f"{split}.csv"
    header, rows = read_csv_table(csv_path)
    if any(c not in header for c in COLUMNS):
        raise columns_error(csv_path, ", ".join(COLUMNS), header)
    col = {c: header.index(c) for c in COLUMNS}
    file = str(csv_path)
    problems: list[Problem] = []

    # key -> [first row, youtube_id, start as written, start, audiocap ids, captions]
    groups: dict[tuple[str, float], tuple[int, str, str, float, list[str], list[str]]] = {}
    seen_ids: dict[str, int] = {}
    for row, values in rows:
        values = values + [""] * (len(header) - len(values))
        cap_id, yid, start_raw, caption = (values[col[c]].strip() for c in COLUMNS)
        if cap_id and cap_id in seen_ids:
            problems.append(
                Problem(
                    file,
                    row,
                    f"duplicate audiocap_id {cap_id} (first at row {seen_ids[cap_id]}); row skipped",
                )
            )
            continue
        if cap_id:
            seen_ids[cap_id] = row
        if not yid:
            problems.append(Problem(file, row, "empty youtube_id; row skipped"))
            continue
        try:
            start = float(start_raw)
        except ValueError:
            problems.append(Problem(file, row, f"start_time {start_raw!r} is not a number; row skipped"))
            continue
        if not caption:
            problems.append(Problem(file, row, f"empty caption for {yid} at {start_raw} s; caption skipped"))
            continue
        group = groups.setdefault((yid, start), (row, yid, start_raw, start, [], []))
        if cap_id:
            group[4].append(cap_id)
        group[5].append(caption)

    audio_dir = AudioDir(first_audio_dir([root / "audio" / split, root / split]))
    if audio_dir.path is None:
        problems.append(
            Problem(file, None, f"no audio folder; looked for {root / 'audio' / split}/ and {root / split}/")
        )
    clips: list[Clip] = []
    for first_row, yid, start_raw, start, cap_ids, captions in groups.values():
        clip_id = f"{yid}_{start_raw}"
        if audio_dir.path is None:
            continue  # reported once above
        stems = audio_stems(yid, start_raw, start, cap_ids)
        path = next((p for s in stems if (p := audio_dir.find_stem(s)) is not None), None)
        if path is None:
            problems.append(
                Problem(
                    file,
                    first_row,
                    f"audio for {clip_id} not found in {audio_dir.path} (tried {', '.join(stems[:3])}, ...); clip skipped",
                )
            )
            continue
        why = audio_problem(path, check_audio)
        if why is not None:
            problems.append(Problem(file, first_row, f"{why}; clip skipped"))
            continue
        clips.append(Clip(clip_id=clip_id, path=path, captions=tuple(captions)))
    return SplitData(name=f"audiocaps/{split}", clips=clips, problems=problems)
