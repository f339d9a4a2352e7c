"""``OnnxModel``: an exported model folder run by ONNX Runtime, with the inference API of ``DualEncoder``
(``embed_waveforms``, ``embed_texts``, ``sample_rate``, ``embed_dim``, ``tau``, ``identity``), so the
index, search, server, tagging and evaluation use it unchanged. Imports neither torch nor transformers:
the tokenizer runs in ``tokenizers``, the splitting and pooling in numpy (``export.pieces``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from soundsift.captions import normalise_captions
from soundsift.errors import ExportError, MissingDependencyError
from soundsift.export.manifest import ExportManifest, Inputs, read_manifest
from soundsift.export.pieces import own_length_pieces, pool_pieces, resample, split_pieces
from soundsift.spans import files_then_windows, patch_ranges, range_rows

INSTALL = "pip install 'soundsift[onnx]'"
#: A first text request of at most this many captions (a search query, a few labels) opens the text graph
#: with one thread: it opens faster (no thread pool to start) and runs one short caption as fast.
FEW_TEXTS = 16
_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


def onnxruntime():
    """The onnxruntime module, or a one-line MissingDependencyError saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(f"--runtime onnx needs onnxruntime: {INSTALL}") from None
    return ort


def graph_inputs(session: Any) -> Inputs:
    """A session's inputs as the manifest records them: name -> [dtype, axes (a name when dynamic)]."""
    return {i.name: [_TYPES.get(i.type, i.type), [d if isinstance(d, int) else "dynamic" for d in i.shape]]
            for i in session.get_inputs()}


def open_session(file: Path, expected: Inputs, threads: int | None = None, spinning: bool = True) -> Any:
    """An ONNX Runtime session of ``file``, refused in one line when its inputs differ from ``expected``;
    ``spinning`` False: its idle intra-op threads sleep instead of spinning (they share the cores with
    the decoding workers of an index build)."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise ExportError(f"{file}: ONNX Runtime cannot load this graph ({str(exc).splitlines()[0]})") from None
    actual = graph_inputs(session)
    if actual != expected:
        raise ExportError(f"{file}: the graph's inputs {actual} do not match its manifest's {expected}; "
                          "export the model again")
    return session


class OnnxModel:
    """An exported model (``soundsift export onnx``) with ``DualEncoder``'s inference API."""

    runtime = "onnx"
    #: Pieces (snippets, patches) per run of the audio core graph; YAMNet's 0.975-s patches: ``PATCH_BATCH``
    #: (measured faster than 64 or 256: docs/onnx.md).
    PIECE_BATCH = 64
    #: Samples per run of a core graph with a dynamic time axis (MN): 64 snippets of 10 s at 32 kHz.
    PIECE_SAMPLES = 64 * 320000
    PATCH_BATCH = 16
    #: Whether the audio graphs' idle threads spin; off: an index build's decoding workers share the
    #: cores (measured in docs/onnx.md).
    AUDIO_SPINNING = False

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.manifest: ExportManifest = read_manifest(self.folder)
        m = self.manifest
        threads = threads or int(os.environ.get("SOUNDSIFT_ONNX_THREADS", "0")) or None
        self._threads = threads
        onnxruntime()  # one line saying how to install it, before any graph is needed
        self._sessions: dict[str, Any] = {}
        self._text_session: Any = None
        self._tokenizer: Any = None
        self.identity: str = m.identity
        self.tau = float(m.tau)
        self.config = m.config
        self.meta = {**m.meta, "runtime": "onnx", "quantize": m.quantize}
        self.quantize = m.quantize
        #: what the audio tower declares (``checkpoints.windows`` reads a snippet model's input length)
        segment = m.audio.segment if m.audio.segment >= 0 else (m.audio.window if m.audio.split == "snippets" else 0)
        self.audio = SimpleNamespace(segment=segment or None, batch_invariant=m.audio.batch_invariant)

    def _audio(self, part: str) -> Any:
        """The audio ``core`` or ``head`` session, opened on first use (a text search never needs it)."""
        if part not in self._sessions:
            a = self.manifest.audio
            self._sessions[part] = open_session(self.folder / getattr(a, part), a.inputs[part], self._threads,
                                                spinning=self.AUDIO_SPINNING)
        return self._sessions[part]

    @property
    def sample_rate(self) -> int:
        return int(self.manifest.audio.sample_rate)

    @property
    def embed_dim(self) -> int:
        return int(self.manifest.embed_dim)

    # ----------------------------------------------------------------------------------------- audio

    def embed_waveforms(self, waveforms: Sequence[np.ndarray], batch_size: int = 32,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Mono waveforms at ``sample_rate`` -> (N, D) float32 unit vectors, in input order."""
        out = np.zeros((len(waveforms), self.embed_dim), np.float32)
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        step = max(1, int(batch_size))
        for start in range(0, len(order), step):
            chunk = self._group(order[start:start + step], waveforms)
            for group in chunk:
                out[group] = self._embed_group([np.asarray(waveforms[i], np.float32) for i in group])
            if progress is not None:
                progress(sum(len(g) for g in chunk))
        return out

    def _group(self, indices: list[int], waveforms: Sequence[np.ndarray]) -> list[list[int]]:
        """Whole-waveform graphs of a tower that is not batch invariant see only equal lengths together."""
        if self.manifest.audio.split != "whole" or self.manifest.audio.batch_invariant:
            return [indices]
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(len(waveforms[i]), []).append(i)
        return list(groups.values())

    def _embed_group(self, waves: list[np.ndarray]) -> np.ndarray:
        a = self.manifest.audio
        if a.model_rate and a.model_rate != a.sample_rate:
            waves = resample(waves, a.sample_rate, a.model_rate)
        if a.split == "whole":
            lengths = np.asarray([len(w) for w in waves], np.int64)
            batch = np.zeros((len(waves), int(lengths.max())), np.float32)
            for row, w in enumerate(waves):
                batch[row, : len(w)] = w
            pooled = self._audio("core").run(None, {"waveform": batch, "lengths": lengths})[0]
        elif a.split == "clips" or a.short_alone:
            pieces, owner, valid = own_length_pieces(waves, a.window if a.split == "snippets" else 0,
                                                     a.min_remainder, a.min_piece)
            pooled = pool_pieces(self._run_by_length(pieces, valid), owner, len(waves), a.pool, a.pool_k)
        else:
            feats, weights, owner = self._pieces(waves)
            pooled = pool_pieces(feats, owner, len(waves), a.pool, a.pool_k, weights)
        return self._head(pooled)

    def _pieces(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The core graph's outputs for every piece of ``waves`` (N, F), their weights (N,) when the
        pooling is weighted, and the clip each piece belongs to (N,)."""
        a = self.manifest.audio
        pieces, owner, valid = split_pieces(waves, a.split, a.window, a.hop, a.min_remainder)
        feats, weights = [], []
        step = self.PATCH_BATCH if a.split == "patches" else self.PIECE_BATCH
        for s in range(0, len(pieces), step):
            feed = {"pieces": pieces[s:s + step]}
            if a.takes_valid:
                feed["valid"] = valid[s:s + step]
            outs = self._audio("core").run(None, feed)
            feats.append(outs[0])
            if a.weighted:
                weights.append(outs[1])
        return np.concatenate(feats), (np.concatenate(weights) if a.weighted else None), owner

    def _head(self, pooled: np.ndarray) -> np.ndarray:
        return self._audio("head").run(None, {"pooled": np.ascontiguousarray(pooled, np.float32)})[0]

    def _run_by_length(self, pieces: list[np.ndarray], valid: np.ndarray) -> np.ndarray:
        """The core graph (dynamic time axis) on pieces of different lengths: only equal lengths share a
        run, at most ``PIECE_BATCH`` snippets' worth of samples each. Rows in the order of ``pieces``."""
        out: np.ndarray | None = None
        by_length: dict[int, list[int]] = {}
        for i, piece in enumerate(pieces):
            by_length.setdefault(len(piece), []).append(i)
        for n, rows in by_length.items():
            step = max(1, self.PIECE_SAMPLES // max(n, 1))
            for s in range(0, len(rows), step):
                part = rows[s:s + step]
                feats = self._audio("core").run(None, {"pieces": np.stack([pieces[i] for i in part]),
                                                       "valid": valid[part]})[0]
                out = np.zeros((len(pieces), feats.shape[1]), np.float32) if out is None else out
                out[part] = feats
        assert out is not None
        return out

    @property
    def pools_patches(self) -> bool:
        """Whether the audio tower pools patches (``split="patches"``), so a file's windows can be pooled
        from the file's own patches (``embed_patch_windows``), as ``DualEncoder`` does."""
        return self.manifest.audio.split == "patches"

    def embed_patch_windows(self, waveforms: Sequence[np.ndarray], spans: Sequence[np.ndarray],
                            batch_size: int = 32, rule: str = "inside",
                            progress: Callable[[int], None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each waveform's unit vector and its windows' ((W, D); ``spans[i]``: (W, 2) samples), each window
        pooled from the file's patches that ``spans.patch_ranges`` gives it by ``rule`` (``DualEncoder``'s
        ``embed_patch_windows``): the core graph runs once per patch of a file."""
        a = self.manifest.audio
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(waveforms)  # type: ignore[list-item]
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        for start in range(0, len(order), max(1, int(batch_size))):
            group = order[start:start + max(1, int(batch_size))]
            feats, weights, owner = self._pieces([np.asarray(waveforms[i], np.float32) for i in group])
            bounds = np.searchsorted(owner, np.arange(len(group) + 1))
            rows, owners, sizes = [np.arange(len(owner))], [owner], []
            for j, i in enumerate(group):
                ranges = patch_ranges(spans[i], int(bounds[j + 1] - bounds[j]), a.window, a.hop, rule)
                at, which = range_rows(ranges)
                rows.append(bounds[j] + at)
                owners.append(len(group) + sum(sizes) + which)
                sizes.append(len(ranges))
            take = np.concatenate(rows)
            pooled = pool_pieces(feats[take], np.concatenate(owners), len(group) + sum(sizes), a.pool, a.pool_k,
                                 None if weights is None else weights[take])
            for i, pair in zip(group, files_then_windows(self._head(pooled), sizes)):
                out[i] = pair
            if progress is not None:
                progress(len(group))
        return out

    def embed_audio(self, audio: Any, batch_size: int = 32) -> np.ndarray:
        """Audio files and/or mono waveforms (``audio.as_waveforms``) -> (N, D) unit vectors."""
        from soundsift.audio import as_waveforms

        return self.embed_waveforms(as_waveforms(audio, self.sample_rate), batch_size)

    # ------------------------------------------------------------------------------------------ text

    def _text(self, count: int) -> tuple[Any, Any]:
        """The text graph and tokenizer, loaded on first use (an index build never needs them); ``count``:
        the captions of the first request (``FEW_TEXTS`` or fewer: one thread, unless threads were set)."""
        if self._text_session is None:
            t = self.manifest.text
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise MissingDependencyError(f"the ONNX text tower needs tokenizers: {INSTALL}") from None
            tokenizer = Tokenizer.from_file(str(self.folder / t.tokenizer))
            tokenizer.enable_truncation(max_length=int(t.max_tokens))
            tokenizer.enable_padding(pad_id=int(t.pad_id), pad_token=t.pad_token)
            self._tokenizer = tokenizer
            threads = self._threads or (1 if count <= FEW_TEXTS else None)
            self._text_session = open_session(self.folder / t.graph, t.inputs["graph"], threads)
        return self._text_session, self._tokenizer

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Captions -> (N, D) float32 unit vectors (CaptionError names an empty one)."""
        t = self.manifest.text
        norm = normalise_captions(list(texts), t.lowercase, t.strip_punctuation)
        if not norm:
            return np.zeros((0, self.embed_dim), np.float32)
        session, tokenizer = self._text(len(norm))
        parts = []
        for s in range(0, len(norm), batch_size):
            enc = tokenizer.encode_batch(norm[s:s + batch_size])
            ids = np.asarray([e.ids for e in enc], np.int64)
            mask = np.asarray([e.attention_mask for e in enc], np.int64)
            parts.append(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(parts).astype(np.float32)

    def embed_text(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """A caption or captions -> (N, D) float32 unit vectors."""
        return self.embed_texts([texts] if isinstance(texts, str) else list(texts), batch_size)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.folder)!r}, quantize={self.quantize!r})"
