"""Many strings as one UTF-8 buffer plus end offsets (:class:`StringTable`) and integer columns compared
by digest (``_Ints``): how teacher files hold a split's clip ids, caption texts and caption->clip index,
so two million captions cost their bytes, not two million Python objects, and alignment checks compare
digests or bytes. Arrays only: no files, no models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from soundsift.errors import TeacherFileError


# ------------------------------------------------------------------------------------ string tables
def _strings_digest(data: np.ndarray, ends: np.ndarray) -> str:
    """sha256 of a string list in order: its end offsets (int64 little-endian), then its UTF-8 bytes."""
    h = hashlib.sha256(b"soundsift.strings/1\n")
    h.update(np.ascontiguousarray(ends, dtype="<i8").tobytes())
    h.update(memoryview(np.ascontiguousarray(data, dtype=np.uint8)))
    return h.hexdigest()


def _ints_digest(values: np.ndarray) -> str:
    return hashlib.sha256(b"soundsift.ints/1\n" + np.ascontiguousarray(values, dtype="<i8").tobytes()).hexdigest()


class StringTable(Sequence[str]):
    """An immutable list of strings stored as one UTF-8 buffer (uint8) and int64 end offsets.

    Strings are decoded one at a time when indexed; ``len`` and :attr:`digest` need no decoding (and,
    for a table opened from a teacher store, no reading at all). Compares equal to any sequence of the
    same strings in the same order.
    """

    __slots__ = ("_n", "_loader", "_data", "_ends", "_digest", "where")

    def __init__(self, data: np.ndarray, ends: np.ndarray, digest: str | None = None, where: str = "") -> None:
        self._data, self._ends = np.asarray(data, dtype=np.uint8).reshape(-1), np.asarray(ends).reshape(-1)
        self._n, self._loader, self._digest, self.where = len(self._ends), None, digest, where
        self._check()

    @classmethod
    def from_strings(cls, strings: Iterable[Any]) -> StringTable:
        if isinstance(strings, StringTable):
            return strings
        blobs = [str(s).encode("utf-8") for s in strings]
        ends = np.cumsum(np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)), dtype=np.int64)
        return cls(np.frombuffer(b"".join(blobs), dtype=np.uint8), ends)

    @classmethod
    def lazy(cls, n: int, loader: Callable[[], tuple[np.ndarray, np.ndarray]], digest: str, where: str) -> StringTable:
        """A table of ``n`` strings whose buffers ``loader()`` gives on first use (not before)."""
        table = cls.__new__(cls)
        table._n, table._loader, table._data, table._ends = n, loader, None, None
        table._digest, table.where = digest, where
        return table

    def _check(self) -> None:
        ends = self._ends
        if ends.dtype.kind not in "iu" or (
            len(ends)
            and (int(ends[0]) < 0 or bool((np.diff(ends) < 0).any()) or int(ends[-1]) != len(self._data))
        ):
            raise TeacherFileError(f"{self.where or 'string table'}: corrupt string block (offsets do not fit the bytes)")

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(utf8 uint8 bytes, int64 end offsets)``."""
        if self._data is None:
            data, ends = self._loader()
            self._data, self._ends = np.asarray(data).reshape(-1), np.asarray(ends).reshape(-1)
            if len(self._ends) != self._n:
                raise TeacherFileError(f"{self.where}: {len(self._ends)} string offsets, expected {self._n}")
            self._check()
        return self._data, self._ends

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = _strings_digest(*self.buffers())
        return self._digest

    def __len__(self) -> int:
        return self._n

    def _decode(self, data: np.ndarray, ends: np.ndarray, i: int) -> str:
        start = int(ends[i - 1]) if i else 0
        try:
            return data[start : int(ends[i])].tobytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise TeacherFileError(f"{self.where or 'string table'}: string {i} is not UTF-8 ({err})") from None

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"string index {i} out of range for {self._n} strings")
        return self._decode(*self.buffers(), i)

    def __iter__(self) -> Iterator[str]:
        data, ends = self.buffers()
        for i in range(self._n):
            yield self._decode(data, ends, i)

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, bytes)) or not isinstance(other, Sequence):
            return NotImplemented
        return _first_string_difference(self, StringTable.from_strings(other)) is None

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(s) for s in self[:3]) + (", ..." if self._n > 3 else "")
        return f"StringTable([{shown}], n={self._n})"


def _first_string_difference(a: StringTable, b: StringTable) -> int | None:
    """Index of the first string that differs (or ``min(len)`` if one is a prefix); ``None`` if equal.
    Equal digests decide without reading; otherwise offsets and bytes are compared vectorised."""
    if len(a) == len(b) and (a._digest is not None or b._digest is not None) and a.digest == b.digest:
        return None  # a store's digest comes from its manifest: no reading
    (da, ea), (db, eb) = a.buffers(), b.buffers()
    n = min(len(ea), len(eb))
    mismatch = np.flatnonzero(ea[:n] != eb[:n])
    k = int(mismatch[0]) if len(mismatch) else n  # strings before k have the same boundaries
    limit = int(ea[k - 1]) if k else 0
    diff = np.flatnonzero(da[:limit] != db[:limit])
    i = int(np.searchsorted(ea[:k], int(diff[0]), side="right")) if len(diff) else k
    return None if i == n and len(ea) == len(eb) else i


class _Ints:
    """The caption->clip index as compared by alignment checks: a digest, and the values on demand."""

    def __init__(self, n: int, load: Callable[[], np.ndarray], digest: str | None = None) -> None:
        self.n, self._load, self._values, self._digest = n, load, None, digest

    @classmethod
    def of(cls, values: Any) -> _Ints:
        if isinstance(values, _Ints):
            return values
        arr = torch.as_tensor(values).reshape(-1).long().cpu().numpy()
        return cls(len(arr), lambda: arr)

    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.asarray(self._load()).reshape(-1)
        return self._values

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = _ints_digest(self.values())
        return self._digest


def _first_int_difference(a: _Ints, b: _Ints) -> int | None:
    if a.n == b.n and (a._digest is not None or b._digest is not None) and a.digest == b.digest:
        return None
    va, vb = a.values(), b.values()
    n = min(len(va), len(vb))
    mismatch = np.flatnonzero(va[:n] != vb[:n])
    if len(mismatch):
        return int(mismatch[0])
    return None if len(va) == len(vb) else n
