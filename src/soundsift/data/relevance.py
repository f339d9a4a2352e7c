"""Relevance files: queries with several relevant clips each (the DCASE 2025 task 6 protocol).

Two CSV layouts are read (UTF-8, BOM allowed, header required):

``query,audio_filenames``
    the DCASE 2025 annotation file (CPJKU/dcase2025_task6_baseline ``resources/metadata_eval.csv``):
    one row per query; the second field is a Python list literal of file names, e.g.
    ``"A dog barks, twice.","['dog 1.wav', ""kid's room.wav""]"``. It is parsed with
    ``ast.literal_eval`` (literals only, never code).
``query,file``
    one (query, relevant file) pair per row; a query may take several rows. ``caption`` is accepted for
    ``query`` and ``file_name``/``audio_filename`` for ``file``.

Rows of the same query are merged (files in first-seen order, duplicates dropped). A malformed row is a
one-line DatasetError naming the file and its row (the header is row 1; for rows on one line, the line).
:func:`write_relevance` writes the DCASE 2025 layout; :func:`match_relevance` lines the queries up with
a split's clips and captions, leaving out (and counting) those that do not fit it.
"""

from __future__ import annotations

import ast
import csv
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.data.readers.common import columns_error, nfc, read_csv_table
from soundsift.errors import DatasetError

__all__ = [
    "DCASE2025_HEADER",
    "MatchedRelevance",
    "Relevance",
    "RelevanceQuery",
    "match_relevance",
    "read_relevance",
    "text_key",
    "write_relevance",
]

DCASE2025_HEADER = ("query", "audio_filenames")
_QUERY_COLUMNS = ("query", "caption")
_FILE_COLUMNS = ("file", "file_name", "audio_filename")
#: Why a query was left out by :func:`match_relevance`.
NOT_A_CAPTION = "query is not a caption of the split"
MISSING_FILE = "relevant file not in the split"


@dataclass(frozen=True)
class RelevanceQuery:
    """One query and its relevant files; ``row``: where it first appears in its file."""

    query: str
    files: tuple[str, ...]
    row: int


@dataclass
class Relevance:
    """The queries of one relevance file, in file order; ``layout``: ``"dcase2025"`` or ``"pairs"``."""

    path: Path
    layout: str
    queries: list[RelevanceQuery]


def _file_list(text: str, where: str) -> list[str]:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise DatasetError(f"{where}: audio_filenames {_short(text)} is not a Python list literal") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{where}: audio_filenames {_short(text)} is not a list of file names")
    names = [v.strip() for v in value]
    if not names or not all(names):
        raise DatasetError(f"{where}: audio_filenames {_short(text)} has no file name (or an empty one)")
    return names


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def read_relevance(path: str | Path) -> Relevance:
    """Read a relevance file in either layout (chosen by its header; see the module docstring)."""
    path = Path(path)
    header, rows = read_csv_table(path)
    lower = [h.lower() for h in header]
    query_col = next((lower.index(c) for c in _QUERY_COLUMNS if c in lower), None)
    if query_col is not None and "audio_filenames" in lower:
        layout, file_col = "dcase2025", lower.index("audio_filenames")
    elif query_col is not None and any(c in lower for c in _FILE_COLUMNS):
        layout, file_col = "pairs", next(lower.index(c) for c in _FILE_COLUMNS if c in lower)
    else:
        raise columns_error(path, "query,audio_filenames (DCASE 2025) or query,file (one pair per row)", header)
    merged: dict[str, tuple[int, dict[str, None]]] = {}
    for row, values in rows:
        where = f"{path}, row {row}"
        if len(values) != len(header):
            raise DatasetError(f"{where}: {len(values)} fields for the {len(header)} columns "
                               f"{','.join(header)} (an unquoted comma?)")
        query, cell = values[query_col].strip(), values[file_col]
        if not query:
            raise DatasetError(f"{where}: empty query")
        if layout == "dcase2025":
            names = _file_list(cell, where)
        else:
            names = [cell.strip()]
            if not names[0]:
                raise DatasetError(f"{where}: empty file name for query {_short(query)}")
        _, files = merged.setdefault(query, (row, {}))
        files.update(dict.fromkeys(names))
    if not merged:
        raise DatasetError(f"{path}: no queries (only a header)")
    queries = [RelevanceQuery(q, tuple(files), row) for q, (row, files) in merged.items()]
    return Relevance(path, layout, queries)


def write_relevance(path: str | Path, queries: Mapping[str, Sequence[str]] | Iterable[tuple[str, Sequence[str]]]
                    ) -> Path:
    """Write ``{query: files}`` (or ``(query, files)`` pairs) in the DCASE 2025 layout, atomically.

    The list field is ``repr`` of a list of str, as in the published file, so :func:`read_relevance`
    (and the DCASE 2025 baseline's ``ast.literal_eval``) reads it back exactly.
    """
    items = list(queries.items()) if isinstance(queries, Mapping) else list(queries)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(DCASE2025_HEADER)
    for query, files in items:
        if not str(query).strip() or not files:
            raise ValueError(f"every query needs a text and at least one file, got {query!r}: {files!r}")
        writer.writerow([query, repr([str(f) for f in files])])
    data = text.getvalue().encode("utf-8")

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(Path(path), write)


# ---- lining a relevance file up with a split ------------------------------------------------------------
def text_key(text: str) -> str:
    return " ".join(nfc(text).split())


@dataclass
class MatchedRelevance:
    """The queries of a relevance file that fit a split.

    ``texts[q]`` is query q; ``relevance`` is bool ``(n_clips, n_queries)`` in the split's clip order;
    ``left_out`` counts the queries dropped per reason and ``examples`` shows a few of them.
    """

    texts: list[str]
    relevance: np.ndarray
    n_read: int
    left_out: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def n_left_out(self) -> int:
        return sum(self.left_out.values())


def match_relevance(relevance: Relevance, clip_ids: Sequence[str], caption_texts: Sequence[str] | None = None,
                    max_examples: int = 5) -> MatchedRelevance:
    """Line ``relevance`` up with a split's clips (``clip_ids``, e.g. ClothoV2 file names).

    A query is left out when one of its files is not among ``clip_ids`` (its AP would change meaning), or,
    when ``caption_texts`` is given, when it is not one of them (the DCASE 2025 protocol: the queries are
    the split's captions). Names compare in Unicode NFC form, captions also with runs of white space
    collapsed; a file name that only matches after decoding HTML entities (``&#39;`` for ``'``, as in the
    published file) matches too.
    """
    exact = {nfc(c): i for i, c in reversed(list(enumerate(clip_ids)))}
    unescaped = {nfc(html.unescape(c)): i for i, c in reversed(list(enumerate(clip_ids)))}
    captions = None if caption_texts is None else {text_key(t) for t in caption_texts}
    texts: list[str] = []
    columns: list[list[int]] = []
    left_out: dict[str, int] = {}
    examples: list[str] = []

    def drop(reason: str, q: RelevanceQuery, detail: str) -> None:
        left_out[reason] = left_out.get(reason, 0) + 1
        if len(examples) < max_examples:
            examples.append(f"row {q.row}: {_short(q.query)}: {detail}")

    for q in relevance.queries:
        if captions is not None and text_key(q.query) not in captions:
            drop(NOT_A_CAPTION, q, NOT_A_CAPTION)
            continue
        rows = [exact.get(nfc(f), unescaped.get(nfc(html.unescape(f)))) for f in q.files]
        missing = [f for f, r in zip(q.files, rows) if r is None]
        if missing:
            drop(MISSING_FILE, q, f"{len(missing)} file(s) not in the split, e.g. {missing[0]!r}")
            continue
        texts.append(q.query)
        columns.append(sorted(set(rows)))
    matrix = np.zeros((len(clip_ids), len(texts)), dtype=bool)
    for j, rows in enumerate(columns):
        matrix[rows, j] = True
    return MatchedRelevance(texts, matrix, len(relevance.queries), left_out, examples)
