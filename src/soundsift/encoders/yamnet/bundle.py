"""Reader for TensorFlow checkpoints ("tensor bundles") in pure Python + numpy, no TensorFlow.

A checkpoint with prefix ``P`` (e.g. ``saved_model/variables/variables``) is two kinds of file:

- ``P.index``: an SSTable (LevelDB's table format) mapping each tensor name to a ``BundleEntryProto``
  (dtype, shape, shard, offset, size, masked CRC32C); the empty key holds a ``BundleHeaderProto``;
- ``P.data-SSSSS-of-NNNNN``: the raw little-endian tensor bytes of each shard.

Only what checkpoints written by ``tf.train.Checkpoint``/Keras use is supported: uncompressed blocks,
whole (unsliced) tensors of numeric, bool or string dtypes. Files are given as paths or read through a
callable, so a bundle can also be read straight out of a wheel (a zip) without extracting it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsift.errors import BundleError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_MASK_DELTA = 0xA282EAD8
# TensorFlow DataType enum -> numpy dtype (little endian). 7 (DT_STRING) is handled separately.
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2",
           19: "<f2", 22: "<u4", 23: "<u8"}
_DT_STRING = 7


# --------------------------------------------------------------------------------------------- CRC32C
def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()
_CRC_LIST = [int(v) for v in _CRC_TABLE]


def _crc_raw_serial(data: bytes | memoryview, state: int) -> int:
    table = _CRC_LIST
    for byte in bytes(data):
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def _crc_run(states: np.ndarray, chunks: np.ndarray | None, steps: int) -> np.ndarray:
    """Advance many CRC registers in lock-step over ``steps`` bytes (zeros when ``chunks`` is None)."""
    for i in range(steps):
        low = states & 0xFF if chunks is None else (states ^ chunks[:, i]) & 0xFF
        states = _CRC_TABLE[low] ^ (states >> 8)
    return states


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of ``data``, vectorised with numpy so a 10 MB tensor takes well under 1 s.

    The bytes are cut into equal chunks whose CRCs run in parallel; the chunk CRCs are chained with the
    linear "advance over L zero bytes" map, tabulated once per call.
    """
    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), dtype=np.uint8)
    n = buf.size
    if n < 8192:
        return _crc_raw_serial(buf.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    chunk = 1 << max(8, int(round(np.log2(np.sqrt(n)))))
    head = n % chunk
    state = _crc_raw_serial(buf[:head].tobytes(), 0xFFFFFFFF)
    body = buf[head:].reshape(-1, chunk).astype(np.uint32)
    partial = _crc_run(np.zeros(body.shape[0], dtype=np.uint32), body, chunk)
    # zero-advance map applied to every byte value in every byte position of the register
    basis = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None])
    shift = _crc_run(basis.reshape(-1), None, chunk).reshape(4, 256).tolist()
    s0, s1, s2, s3 = shift
    for value in partial.tolist():
        state = s0[state & 0xFF] ^ s1[(state >> 8) & 0xFF] ^ s2[(state >> 16) & 0xFF] ^ s3[state >> 24] ^ value
    return state ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow's CRC masking (stored CRCs are masked)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# --------------------------------------------------------------------------------- varints and protos
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode a protobuf message into (field number, value) pairs; values are ints or raw bytes."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


@dataclass(frozen=True)
class BundleEntry:
    """One tensor's ``BundleEntryProto``."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool

    @classmethod
    def parse(cls, value: bytes) -> BundleEntry:
        dtype = shard = offset = size = 0
        shape: list[int] = []
        crc: int | None = None
        sliced = False
        for number, field in _proto_fields(value):
            if number == 1:
                dtype = int(field)
            elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
                for dim_no, dim in _proto_fields(bytes(field)):
                    if dim_no == 2:
                        shape.append(int(dict(_proto_fields(bytes(dim))).get(1, 0)))
            elif number == 3:
                shard = int(field)
            elif number == 4:
                offset = int(field)
            elif number == 5:
                size = int(field)
            elif number == 6:
                crc = int(field)
            elif number == 7:
                sliced = True
        return cls(dtype, tuple(shape), shard, offset, size, crc, sliced)


# -------------------------------------------------------------------------------------------- SSTable
def _read_block(data: bytes, offset: int, size: int, verify: bool, name: str) -> bytes:
    block = data[offset:offset + size]
    trailer = data[offset + size:offset + size + 5]
    if len(block) != size or len(trailer) != 5:
        raise BundleError(f"{name}: block at {offset} runs past the end of the file")
    if trailer[0] != 0:
        raise BundleError(f"{name}: compressed table blocks (type {trailer[0]}) are not supported")
    if verify:
        expected = struct.unpack("<I", trailer[1:])[0]
        if mask_crc(crc32c(block + trailer[:1])) != expected:
            raise BundleError(f"{name}: checksum mismatch in table block at {offset}")
    return block


def _block_entries(block: bytes, name: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise BundleError(f"{name}: table block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    entries: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def read_sstable(data: bytes, name: str = "<table>", verify: bool = True) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of an uncompressed LevelDB-format table held in ``data``."""
    if len(data) < _FOOTER_SIZE:
        raise BundleError(f"{name}: too short to be a table ({len(data)} bytes)")
    footer = data[-_FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise BundleError(f"{name}: not a tensor bundle index (bad table magic number)")
    _meta_offset, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    records: list[tuple[bytes, bytes]] = []
    for _last_key, handle in _block_entries(_read_block(data, index_offset, index_size, verify, name), name):
        offset, hpos = _varint(handle, 0)
        size, _ = _varint(handle, hpos)
        records.extend(_block_entries(_read_block(data, offset, size, verify, name), name))
    return records


# ------------------------------------------------------------------------------------------ the bundle
class TensorBundle:
    """Random access to the tensors of one checkpoint.

    ``TensorBundle.open(prefix)`` reads files from disk; ``TensorBundle(read_file, prefix)`` takes any
    ``read_file(path) -> bytes`` (e.g. a zip member reader).
    """

    def __init__(self, read_file: Callable[[str], bytes], prefix: str, verify: bool = True):
        self.prefix = prefix
        self.verify = verify
        self._read_file = read_file
        index_name = f"{prefix}.index"
        self.entries: dict[str, BundleEntry] = {}
        self.num_shards = 1
        for key, value in read_sstable(read_file(index_name), index_name, verify):
            if key == b"":
                header = dict(_proto_fields(value))
                self.num_shards = int(header.get(1, 1))
                if int(header.get(2, 0)) != 0:
                    raise BundleError(f"{index_name}: big-endian bundles are not supported")
                continue
            self.entries[key.decode("utf-8")] = BundleEntry.parse(value)
        self._shards: dict[int, bytes] = {}

    @classmethod
    def open(cls, prefix: str | Path, verify: bool = True) -> TensorBundle:
        """Open the checkpoint whose files are ``{prefix}.index`` and ``{prefix}.data-*``."""
        return cls(lambda path: Path(path).read_bytes(), str(prefix), verify)

    def keys(self) -> list[str]:
        return sorted(self.entries)

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            name = f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"
            self._shards[shard_id] = self._read_file(name)
        return self._shards[shard_id]

    def read(self, name: str) -> np.ndarray:
        """The tensor stored under ``name`` (numeric dtypes as numpy arrays, strings as an object array)."""
        if name not in self.entries:
            raise KeyError(f"{self.prefix}: no tensor named {name!r}")
        entry = self.entries[name]
        where = f"{self.prefix}: tensor {name!r}"
        if entry.sliced:
            raise BundleError(f"{where} is stored in slices (partitioned variable), which is not supported")
        raw = self._shard(entry.shard_id)[entry.offset:entry.offset + entry.size]
        if len(raw) != entry.size:
            raise BundleError(f"{where}: data file is truncated")
        if entry.dtype == _DT_STRING:
            return self._strings(raw, entry, where)
        if entry.dtype not in _DTYPES:
            raise BundleError(f"{where}: unsupported dtype enum {entry.dtype}")
        if self.verify and entry.crc32c is not None and mask_crc(crc32c(raw)) != entry.crc32c:
            raise BundleError(f"{where}: checksum mismatch (corrupt data file)")
        dtype = np.dtype(_DTYPES[entry.dtype])
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise BundleError(f"{where}: {entry.size} bytes do not hold shape {entry.shape} of {dtype}")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()

    @staticmethod
    def _strings(raw: bytes, entry: BundleEntry, where: str) -> np.ndarray:
        # layout: varint64 length of each element, a 4-byte checksum of the lengths, the bytes
        count = int(np.prod(entry.shape, dtype=np.int64))
        lengths, pos = [], 0
        for _ in range(count):
            length, pos = _varint(raw, pos)
            lengths.append(length)
        pos += 4
        values = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            values[i] = raw[pos:pos + length]
            pos += length
        if pos != len(raw):
            raise BundleError(f"{where}: string tensor sizes do not add up")
        return values.reshape(entry.shape)

    def read_all(self, skip_strings: bool = True) -> dict[str, np.ndarray]:
        """Every tensor by name (string tensors such as the object graph are skipped by default)."""
        return {k: self.read(k) for k in self.keys()
                if not (skip_strings and self.entries[k].dtype == _DT_STRING)}
