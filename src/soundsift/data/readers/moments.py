"""Moment annotations and predictions: Clotho-Moment and CASTELLA as lighthouse publishes them.

Both datasets ship as JSON lines, one query per line (github line/lighthouse, ``data/clotho_moment/
clotho_moment_{train,val,test}_release.jsonl`` and ``data/castella/castella_{train,val,test}_release.jsonl``):
``{"qid", "query", "vid", "duration", "relevant_windows": [[start, end], ...]}``; Clotho-Moment adds
``fg_dB`` (the foreground level, ignored here). Predictions (the task's submission format) are
``{"qid", "query", "vid", "pred_relevant_windows": [[start, end, score], ...]}``. Ids are read as strings
(the files write ``"32694"``; an integer id means the same query).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from soundsift.errors import DatasetError

ANNOTATION_KEYS = ("qid", "query", "vid", "duration", "relevant_windows")
PREDICTION_KEYS = ("qid", "pred_relevant_windows")
END_SLACK = 2.0  # seconds a window may end past ``duration``: CASTELLA rounds ends up (271 end 1 s past, 1 2 s past)


@dataclass(frozen=True)
class MomentQuery:
    """One text query on one recording and its true windows (seconds)."""

    qid: str
    query: str
    windows: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class SkippedLine:
    """An annotation line left out (``read_moment_annotations(..., skipped=[])``): its qid if it has one."""

    qid: str | None
    reason: str  # one line naming the file, the line and what is wrong

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class MomentRecording:
    """A long recording: its id (``vid``), duration in seconds, and the queries asked of it."""

    vid: str
    duration: float
    queries: tuple[MomentQuery, ...]


def _lines(path: Path, skipped: list[SkippedLine] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-empty line of a JSON-lines file; with ``skipped``, a line that is
    not a JSON object is reported there and left out."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"{path}:{number}: not a JSON line ({e.msg})"
            else:
                if isinstance(row, dict):
                    yield number, row
                    continue
                problem = f"{path}:{number}: expected a JSON object per line"
            if skipped is None:
                raise DatasetError(problem)
            skipped.append(SkippedLine(None, problem))


def _require(path: Path, number: int, row: dict, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DatasetError(f"{path}:{number}: unknown layout: expected {what} with keys {', '.join(keys)}; "
                           f"missing {', '.join(missing)}")


def _number(path: Path, number: int, value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{path}:{number}: {name} must be a number, got {value!r}")
    return float(value)


def _window(path: Path, number: int, value: object, size: int) -> tuple[float, ...]:
    """A window [start, end] (size 2) or [start, end, score] (size 3), checked: start <= end."""
    if not isinstance(value, list) or len(value) != size:
        shape = "[start, end]" if size == 2 else "[start, end, score]"
        raise DatasetError(f"{path}:{number}: a window must be {shape}, got {value!r}")
    w = tuple(_number(path, number, v, "a window's start, end and score") for v in value)
    if w[1] < w[0]:
        raise DatasetError(f"{path}:{number}: window {value!r} ends before it starts")
    return w


def read_moment_annotations(path: str | Path, end_slack: float = END_SLACK,
                            skipped: list[SkippedLine] | None = None) -> list[MomentRecording]:
    """Recordings with their queries, in file order. Refuses (DatasetError, naming the file and line)
    an unknown layout, a window with end < start, and one outside ``[0, duration + end_slack]``. Given a
    ``skipped`` list, a bad line is left out instead and reported there (``SkippedLine``; a training
    job skips and reports; evaluation stays strict unless asked)."""
    path = Path(path)
    recordings: dict[str, tuple[float, list[MomentQuery]]] = {}
    seen: set[str] = set()
    for number, row in _lines(path, skipped):
        try:
            _read_line(path, number, row, end_slack, recordings, seen)
        except DatasetError as e:
            if skipped is None:
                raise
            skipped.append(SkippedLine(None if row.get("qid") is None else str(row["qid"]), str(e)))
    if not recordings:
        raise DatasetError(f"{path}: no annotation in the file" + (f" ({len(skipped)} lines skipped)" if skipped else ""))
    return [MomentRecording(vid, d, tuple(qs)) for vid, (d, qs) in recordings.items()]


def _read_line(path: Path, number: int, row: dict, end_slack: float,
               recordings: dict[str, tuple[float, list[MomentQuery]]], seen: set[str]) -> None:
    """Check one annotation line and add its query to ``recordings`` (nothing is added when it fails)."""
    _require(path, number, row, ANNOTATION_KEYS, "a moment annotation (Clotho-Moment/CASTELLA)")
    qid, vid = str(row["qid"]), str(row["vid"])
    duration = _number(path, number, row["duration"], "duration")
    if qid in seen:
        raise DatasetError(f"{path}:{number}: qid {qid!r} occurs twice")
    if not isinstance(row["relevant_windows"], list):
        raise DatasetError(f"{path}:{number}: relevant_windows must be a list, got {row['relevant_windows']!r}")
    windows = tuple(_window(path, number, w, 2) for w in row["relevant_windows"])
    for start, end in windows:
        if start < 0 or end > duration + end_slack:
            raise DatasetError(f"{path}:{number}: window [{start:g}, {end:g}] lies beyond the recording "
                               f"{vid!r} (duration {duration:g} s)")
    known = recordings.setdefault(vid, (duration, []))
    if known[0] != duration:
        raise DatasetError(f"{path}:{number}: recording {vid!r} has duration {duration:g} here but {known[0]:g} "
                           "on an earlier line")
    seen.add(qid)
    known[1].append(MomentQuery(qid, str(row["query"]), windows))  # type: ignore[arg-type]


def read_moment_predictions(path: str | Path) -> dict[str, list[tuple[float, float, float]]]:
    """qid -> its predicted windows [start, end, score] in file order. Refuses (DatasetError, naming the
    file and line) an unknown layout, a malformed window, end < start, and a qid given twice."""
    path = Path(path)
    predictions: dict[str, list[tuple[float, float, float]]] = {}
    for number, row in _lines(path):
        _require(path, number, row, PREDICTION_KEYS, "a prediction")
        qid = str(row["qid"])
        if qid in predictions:
            raise DatasetError(f"{path}:{number}: qid {qid!r} occurs twice")
        if not isinstance(row["pred_relevant_windows"], list):
            raise DatasetError(f"{path}:{number}: pred_relevant_windows must be a list")
        predictions[qid] = [_window(path, number, w, 3) for w in row["pred_relevant_windows"]]  # type: ignore[misc]
    return predictions
