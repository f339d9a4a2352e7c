"""Dataset inspection: what a dataset folder holds and everything wrong with it, before a long job.

``inspect_dataset`` reads every split a format defines and gathers clip and caption counts and every
Problem (missing or unreadable audio, empty captions, duplicates, bad columns) with file and row.

When is a dataset ``ok``? Strictly: at least one split is found; every found split is readable (no
DatasetError such as missing columns) and yields clips; and no Problem was recorded at all.
``usable`` is the looser test (the same without the last condition): training can skip what is broken.
A split whose captions file is simply absent (say ClothoV2 evaluation not downloaded) is listed as
"not found" and does not by itself make the dataset not ok.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soundsift.data.records import Problem, SplitData
from soundsift.data.stats import CaptionStats, RelevanceStats, caption_stats, format_stats, relevance_stats
from soundsift.errors import DatasetError

RELEVANCE_FILE = "relevance_evaluation.csv"  # what `synth` and `download dcase2025` write; read when present


@dataclass
class SplitReport:
    """One split: found or not, counts, problems, and the error that stopped reading it, if any."""

    name: str
    found: bool
    n_clips: int = 0
    n_captions: int = 0
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    stats: CaptionStats | None = None


@dataclass
class Report:
    """Everything ``inspect_dataset`` found; see the module docstring for ``ok`` and ``usable``."""

    format: str
    root: str
    check_audio: bool
    splits: list[SplitReport]
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # how the splits came about, when the format decided
    relevance_file: str | None = None
    relevance_split: str | None = None  # the split whose clips the relevance file's files are
    relevance: RelevanceStats | None = None

    @property
    def n_problems(self) -> int:
        return sum(len(s.problems) for s in self.splits)

    @property
    def usable(self) -> bool:
        found = [s for s in self.splits if s.found]
        return self.error is None and bool(found) and all(s.error is None and s.n_clips > 0 for s in found)

    @property
    def ok(self) -> bool:
        return self.usable and self.n_problems == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (problems as {file, row, message})."""
        out = asdict(self)
        out.update(ok=self.ok, usable=self.usable, n_problems=self.n_problems)
        return out


def _splits_for(format: str, root: Path) -> tuple[list[tuple[str | None, bool]], list[str]]:
    """The splits a format defines here, each with whether its file exists, and notes on how they came
    about (a folder without a split column: the reader's automatic train/val/test hold-out)."""
    from soundsift.data.readers import READERS

    READERS.get(format)  # an unknown format: UnknownNameError naming the known ones
    if format == "clotho":
        from soundsift.data.readers.clotho import SPLITS, clotho_csv_path

        return [(s, clotho_csv_path(root, "captions", s).is_file()) for s in SPLITS], []
    if format == "audiocaps":
        from soundsift.data.readers.audiocaps import SPLITS

        return [(s, (root / f"{s}.csv").is_file()) for s in SPLITS], []
    if format == "wavcaps":
        return [("train", True)], []  # read_wavcaps raises a clear error when no JSON exists
    if format == "folder":
        from soundsift.data.readers.folder import HOLD_OUT_RULE, list_folder_splits

        if names := list_folder_splits(root):
            return [(s, True) for s in names], []
        return [(s, True) for s in ("train", "val", "test")], [HOLD_OUT_RULE]
    return [(None, True)], []  # a registered format without a split list: read it as one


def inspect_dataset(format: str, root: str | Path, check_audio: bool = True,
                    relevance: str | Path | None = None) -> Report:
    """Read every split of the ``format`` dataset at ``root`` and report counts, problems and the
    statistics of :mod:`soundsift.data.stats`.

    ``check_audio`` opens every audio file's header (catches corrupt files; slower on large sets).
    ``relevance``: a relevance file (default: ``root/relevance_evaluation.csv`` when present) whose
    relevant clips per query are counted. Never raises for a broken dataset: errors land in the report
    (a bad relevance file raises its DatasetError). Raises UnknownNameError for an unknown format.
    """
    from soundsift.data.readers import read_split

    root = Path(root)
    report = Report(format=format, root=str(root), check_audio=check_audio, splits=[])
    if not root.is_dir():
        report.error = f"{root}: folder not found"
        return report
    try:
        splits, report.notes = _splits_for(format, root)
    except DatasetError as exc:
        report.error = str(exc)
        return report
    seen: set[Problem] = set()  # a row every split's reading trips over is reported once
    clip_ids: dict[str, set[str]] = {}
    for name, found in splits:
        label = name or "all"
        if not found:
            report.splits.append(SplitReport(name=label, found=False))
            continue
        try:
            data: SplitData = read_split(format, root, name, check_audio=check_audio)
        except DatasetError as exc:
            report.splits.append(SplitReport(name=label, found=True, error=str(exc)))
            continue
        problems = [p for p in data.problems if p not in seen]
        seen.update(problems)
        details: dict[str, Any] = {}
        for key in ("per_source", "excluded"):
            if hasattr(data, key):
                details[key] = getattr(data, key)
        report.splits.append(
            SplitReport(
                name=label,
                found=True,
                n_clips=len(data.clips),
                n_captions=data.n_captions,
                problems=problems,
                details=details,
                stats=caption_stats([c.captions for c in data.clips]),
            )
        )
        clip_ids[label] = {c.clip_id for c in data.clips}
    _add_relevance(report, root, relevance, clip_ids)
    return report


def _add_relevance(report: Report, root: Path, relevance: str | Path | None, clip_ids: dict[str, set[str]]) -> None:
    from soundsift.data.relevance import read_relevance

    path = Path(relevance) if relevance is not None else root / RELEVANCE_FILE
    if relevance is None and not path.is_file():
        return
    queries = read_relevance(path).queries
    files = {f for q in queries for f in q.files}
    split = max(clip_ids, key=lambda s: len(files & clip_ids[s]), default=None)
    n_clips = len(clip_ids[split]) if split is not None and files & clip_ids[split] else 0
    report.relevance_file, report.relevance_split = str(path), split if n_clips else None
    report.relevance = relevance_stats([len(q.files) for q in queries], n_clips)


def format_report(report: Report) -> str:
    """The report as text for a terminal: one line per split, then every problem, then the verdict."""
    audio = "headers checked" if report.check_audio else "existence only"
    lines = [f"{report.format} dataset at {report.root} (audio: {audio})"]
    if report.error:
        lines.append(f"  error: {report.error}")
    lines.extend(f"  note: {note}" for note in report.notes)
    for s in report.splits:
        if not s.found:
            lines.append(f"  {s.name}: not found")
        elif s.error:
            lines.append(f"  {s.name}: ERROR {s.error}")
        else:
            extra = "".join(f", {k}: {v}" for k, v in s.details.items())
            lines.append(
                f"  {s.name}: {s.n_clips} clips, {s.n_captions} captions, {len(s.problems)} problems{extra}"
            )
    for s in report.splits:
        if s.stats is not None and s.stats.n_captions:
            lines.append(f"statistics of {s.name} (words: lower-cased, punctuation removed):")
            rel = report.relevance if s.name == report.relevance_split else None
            lines.extend(format_stats(s.name, s.stats, rel))
    if report.relevance is not None:
        lines.append(f"relevance: {report.relevance_file}: {report.relevance.n_queries} queries"
                     + (f" over split {report.relevance_split}" if report.relevance_split else
                        " (none of its files is in a split found here)"))
    lines.append("ClothoV2: measured on the DCASE 2025 annotations (docs/benchmark.md)")
    for s in report.splits:
        if s.problems:
            lines.append(f"problems in {s.name}:")
            lines.extend(f"  {p}" for p in s.problems)
    if report.ok:
        lines.append("OK")
    elif report.usable:
        lines.append(
            f"NOT OK: {report.n_problems} problems (the affected clips/captions are skipped when reading)"
        )
    else:
        lines.append("NOT OK: unusable (see errors above, or a split without any clip)")
    return "\n".join(lines)
