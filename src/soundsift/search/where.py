"""Search filters: ``--where "duration < 5 and path ~ 'foley/'"`` (CLI), ``where=`` (``/api/search``).

The grammar (keywords and field names are case-insensitive)::

    filter     := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" filter ")" | comparison
    comparison := FIELD OP VALUE | FIELD "in" "(" VALUE ("," VALUE)* ")"
    OP         := "<" | "<=" | ">" | ">=" | "=" | "==" | "!=" | "~"
    VALUE      := a number, a 'quoted' or "quoted" string, or a bare word (letters, digits, . _ - / *)

Fields: ``duration`` (seconds), ``size`` (bytes), ``sample_rate`` (alias ``rate``: Hz as stored in the
file), ``channels``, ``path`` (relative to the indexed folder, POSIX ``/``), ``folder`` (the folder part
of the path), ``ext`` (alias ``extension``: lower case, without the dot) and ``id``. Numbers compare
with all operators; text with ``=``/``!=`` (exact), ``<``... (in code-point order) and ``~``: a glob when
the pattern holds ``*``, ``?`` or ``[`` (``*`` also matches ``/``), else a prefix (``path ~ 'foley/'``:
every file under ``foley/``; ``folder ~ 'foley'``: the folder ``foley`` and everything under it).
``ext = WAV`` and ``ext ~ .wav`` ignore case and the dot. A malformed filter is one ``ConfigError`` naming
the position (1-based) and what was expected there.

``Filter.mask(index)`` is a boolean array over the index's live rows; searches restrict the candidates to
it (``SoundIndex.search_vectors``), so every one of the k results matches.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from soundsift.errors import ConfigError

NUMERIC = {"duration": "duration", "size": "size", "sample_rate": "sample_rate", "rate": "sample_rate",
           "channels": "channels", "id": "id"}
TEXT = {"path": "path", "folder": "folder", "ext": "ext", "extension": "ext"}
_OPS = ("<=", ">=", "==", "!=", "<", ">", "=", "~")
_TOKEN = re.compile(r"""\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w./*-]))|(?P<str>'[^']*'|"[^"]*")|"""
                    r"""(?P<op><=|>=|==|!=|<|>|=|~)|(?P<punct>[(),])|(?P<word>[\w.*?/\[\]-]+))""")
MAX_LENGTH = 1000


@dataclass(frozen=True)
class _Token:
    kind: str  # num | str | op | punct | word | end
    text: str
    pos: int  # 0-based offset in the filter text


def _tokens(text: str) -> list[_Token]:
    out, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            out.append(_Token("end", "", at))
            return out
        m = _TOKEN.match(text, at)
        if m is None or m.end() == at:
            bad = text[at]
            what = "an unclosed quote" if bad in "'\"" else f"unexpected character {bad!r}"
            raise _error(text, at, what)
        kind = m.lastgroup or "word"
        value = m.group(kind)
        out.append(_Token(kind, value, m.start(kind)))
        at = m.end()


def _error(text: str, pos: int, what: str) -> ConfigError:
    return ConfigError(f"where {text!r}: at position {pos + 1}: {what}")


class Filter:
    """A parsed filter: ``mask(index)`` -> bool array over the live rows; ``text`` as given."""

    def __init__(self, text: str, test: Callable[[Any], np.ndarray]) -> None:
        self.text, self._test = text, test

    def mask(self, index: Any) -> np.ndarray:
        cache = index.cache.setdefault("where_masks", {})
        key = (self.text, len(index))
        if key not in cache:
            if len(cache) > 32:
                cache.clear()
            cache[key] = np.asarray(self._test(_Columns(index)), bool)
        return cache[key]


class _Columns:
    """The columns a filter reads, computed once per index (paths, folders and extensions as text)."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.store = index.cache.setdefault("where_columns", {})

    def get(self, field: str):
        if field not in self.store:
            if field in ("duration", "size", "sample_rate", "channels", "id"):
                self.store[field] = np.asarray(self.index.column(field))
            elif field == "path":
                self.store[field] = self.index.paths()
            elif field == "folder":
                self.store[field] = [p.rpartition("/")[0] for p in self.get("path")]
            else:
                self.store[field] = [p.rpartition("/")[2].rpartition(".")[2].lower() if "." in p.rpartition("/")[2]
                                     else "" for p in self.get("path")]
        return self.store[field]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i = text, _tokens(text), 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def keyword(self, word: str) -> bool:
        if self.tok.kind == "word" and self.tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def expect(self, what: str) -> ConfigError:
        got = "the end" if self.tok.kind == "end" else repr(self.tok.text)
        return _error(self.text, self.tok.pos, f"expected {what}, got {got}")

    def parse(self) -> Callable:
        test = self.or_()
        if self.tok.kind != "end":
            raise self.expect("'and', 'or' or the end")
        return test

    def or_(self) -> Callable:
        parts = [self.and_()]
        while self.keyword("or"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else lambda c: np.logical_or.reduce([p(c) for p in parts])

    def and_(self) -> Callable:
        parts = [self.not_()]
        while self.keyword("and"):
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else lambda c: np.logical_and.reduce([p(c) for p in parts])

    def not_(self) -> Callable:
        if self.keyword("not"):
            inner = self.not_()
            return lambda c: ~inner(c)
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.i += 1
            inner = self.or_()
            if not (self.tok.kind == "punct" and self.tok.text == ")"):
                raise self.expect("')'")
            self.i += 1
            return inner
        return self.comparison()

    def comparison(self) -> Callable:
        tok = self.tok
        name = tok.text.lower()
        if tok.kind != "word" or (name not in NUMERIC and name not in TEXT):
            raise self.expect(f"a field ({', '.join([*NUMERIC, *TEXT])}) or '('")
        self.i += 1
        numeric = name in NUMERIC
        field = NUMERIC[name] if numeric else TEXT[name]
        if self.keyword("in"):
            values = self.value_list(numeric, field)
            return lambda c: _member(c.get(field), values, numeric)
        if self.tok.kind != "op":
            raise self.expect(f"an operator ({' '.join(_OPS)}) or 'in' after {tok.text!r}")
        op = self.tok.text
        self.i += 1
        if numeric and op == "~":
            raise _error(self.text, self.tokens[self.i - 1].pos, f"'~' (match) is for text fields, not {tok.text!r}")
        value = self.value(numeric, field)
        if field == "folder" and op == "~" and not _is_glob(value):  # the folder and everything under it
            top = value.rstrip("/")
            return lambda c: _compare(c.get(field), "=", top, False) | _compare(c.get(field), "~", top + "/", False)
        return lambda c: _compare(c.get(field), op, value, numeric)

    def value_list(self, numeric: bool, field: str) -> list:
        if not (self.tok.kind == "punct" and self.tok.text == "("):
            raise self.expect("'(' after 'in'")
        self.i += 1
        values = [self.value(numeric, field)]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.i += 1
            values.append(self.value(numeric, field))
        if not (self.tok.kind == "punct" and self.tok.text == ")"):
            raise self.expect("',' or ')'")
        self.i += 1
        return values

    def value(self, numeric: bool, field: str):
        tok = self.tok
        if numeric:
            if tok.kind != "num":
                raise self.expect("a number")
            self.i += 1
            return float(tok.text)
        if tok.kind not in ("str", "word", "num"):
            raise self.expect("a value (a 'quoted' text or a word)")
        self.i += 1
        text = tok.text[1:-1] if tok.kind == "str" else tok.text
        return text.lower().lstrip(".") if field == "ext" else text


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _compare(column, op: str, value, numeric: bool) -> np.ndarray:
    if numeric:
        x = np.asarray(column, np.float64)
        return {"<": x < value, "<=": x <= value, ">": x > value, ">=": x >= value, "=": x == value,
                "==": x == value, "!=": x != value}[op]
    if op == "~":
        if _is_glob(value):
            rx = re.compile(fnmatch.translate(value))
            return np.fromiter((rx.match(s) is not None for s in column), bool, len(column))
        return np.fromiter((s.startswith(value) for s in column), bool, len(column))
    ops = {"<": str.__lt__, "<=": str.__le__, ">": str.__gt__, ">=": str.__ge__, "=": str.__eq__,
           "==": str.__eq__, "!=": str.__ne__}
    f = ops[op]
    return np.fromiter((f(s, value) for s in column), bool, len(column))


def _member(column, values: list, numeric: bool) -> np.ndarray:
    if numeric:
        return np.isin(np.asarray(column, np.float64), np.asarray(values, np.float64))
    wanted = set(values)
    return np.fromiter((s in wanted for s in column), bool, len(column))


def parse_where(text: str | Filter) -> Filter:
    """Parse a filter (see the module docstring); ConfigError naming the position of a mistake."""
    if isinstance(text, Filter):
        return text
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"where: the filter is {len(text)} characters long; at most {MAX_LENGTH}")
    if not text.strip():
        raise ConfigError("where: the filter is empty")
    return Filter(text, _Parser(text).parse())
