"""Results tables in three formats from one description: Markdown (results.md, the terminal), CSV
(spreadsheets, plotting) and LaTeX with booktabs rules (``\\input`` into a paper).

A :class:`Table` holds values, not strings; each column's kind says how a value is shown:
``text``, ``integer``, ``number`` (two decimals), ``signed`` (two decimals with a sign) or ``interval``
(``(value, low, high)``, shown as ``+1.23 [+0.45, +2.01]``; CSV gives it three columns).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundsift.atomic import atomic_write

KINDS = ("text", "integer", "number", "signed", "interval")
FORMATS = ("md", "csv", "tex")


@dataclass
class Column:
    name: str
    kind: str = "number"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    title: str = ""
    breaks: set[int] = field(default_factory=set)  # row indices that start a new section (LaTeX \midrule)

    def add(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"a row needs {len(self.columns)} values, got {len(values)}")
        self.rows.append(list(values))


def _number(value: float, signed: bool = False) -> str:
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def cell(value: Any, kind: str) -> str:
    """A value as Markdown and the terminal show it ("" for a missing one)."""
    if value is None or value == "":
        return ""
    if kind == "text":
        return str(value)
    if kind == "integer":
        return str(int(value))
    if kind == "interval":
        v, low, high = value
        return f"{_number(v, True)} [{_number(low, True)}, {_number(high, True)}]"
    return _number(float(value), kind == "signed")


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(c.name for c in table.columns) + " |",
             "|" + "".join("---|" if c.kind == "text" else "---:|" for c in table.columns)]
    for row in table.rows:
        lines.append("| " + " | ".join(cell(v, c.kind) for v, c in zip(row, table.columns)) + " |")
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    """Plain values (numbers unformatted); an interval column becomes NAME, NAME low, NAME high."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = []
    for c in table.columns:
        header += [c.name, f"{c.name} low", f"{c.name} high"] if c.kind == "interval" else [c.name]
    writer.writerow(header)
    for row in table.rows:
        values: list[Any] = []
        for v, c in zip(row, table.columns):
            if c.kind == "interval":
                values += list(v) if v else ["", "", ""]
            else:
                values.append("" if v is None else v)
        writer.writerow(values)
    return out.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_TEXT = {"Δ": r"$\Delta$", "±": r"$\pm$", "–": "--", "—": "---"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for char, command in _LATEX_TEXT.items():
        out = out.replace(char, command)
    return out


def _latex_cell(value: Any, kind: str) -> str:
    if value is None or value == "":
        return ""
    if kind == "text":
        return latex_escape(value)
    if kind == "integer":
        return str(int(value))
    if kind == "interval":
        v, low, high = value
        return f"${_number(v, True)}$ {{\\small[${_number(low, True)}$, ${_number(high, True)}$]}}"
    return f"${_number(float(value), kind == 'signed')}$" if kind == "signed" else _number(float(value))


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (\\toprule, \\midrule, \\bottomrule); needs ``\\usepackage{booktabs}``."""
    spec = "".join("l" if c.kind == "text" else "r" for c in table.columns)
    lines = [f"% {latex_escape(table.title)}" if table.title else "% soundsift results",
             "% needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(c.name) for c in table.columns) + " \\\\", "\\midrule"]
    for i, row in enumerate(table.rows):
        if i in table.breaks and i > 0:
            lines.append("\\midrule")
        lines.append(" & ".join(_latex_cell(v, c.kind) for v, c in zip(row, table.columns)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


RENDER = {"md": to_markdown, "csv": to_csv, "tex": to_latex}


def write_table(table: Table, stem: str | Path, formats: Sequence[str] = FORMATS, markdown_head: str = "") -> list[Path]:
    """``stem.md``, ``stem.csv`` and ``stem.tex``, each written atomically; ``markdown_head`` goes
    above the Markdown table (a title, a note)."""
    paths = []
    for fmt in formats:
        text = RENDER[fmt](table)
        if fmt == "md":
            text = (markdown_head + text).rstrip("\n") + "\n"
        path = Path(f"{stem}.{fmt}")
        paths.append(atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
    return paths
