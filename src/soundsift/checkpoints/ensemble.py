"""System ensembles at inference: several models queried as one (what DCASE submissions do).

``ModelEnsemble`` averages the members' cosine similarity matrices. It does so by concatenating each
member's unit embeddings scaled by ``1/sqrt(M)``: the concatenation has unit norm, and its dot product
is ``(1/M) sum_m a_m . t_m``, the mean of the members' similarities. So an index, a searcher, the
server and the tagger use an ensemble exactly like a single model, and the exact or FAISS backends
rank by the averaged similarity.

Its ``tau`` is the mean of the members' temperatures (their common one when, as usual, they share it):
the averaged similarity is turned into probabilities at the temperature its members score at.

Members may expect different sample rates: the ensemble takes audio at the highest of them and
resamples it (soxr) for each member that expects less.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from soundsift.errors import ConfigError


class ModelEnsemble:
    """Several loaded models (``DualEncoder`` or anything with its interface: embedding, ``identity``,
    ``config``, ``tau``) as one."""

    runtime = "torch"
    quantize: str | None = None
    #: Its window vectors are embedded window by window (``search.embedding``), never pooled from patches.
    pools_patches = False

    def __init__(self, members: Sequence[Any], names: Sequence[str] | None = None):
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least two models, got {len(members)}")
        missing = [i for i, m in enumerate(members) if not getattr(m, "identity", None)]  # not loaded models
        if missing:
            raise ConfigError(f"ensemble members {missing} have no identity: load them with soundsift.load_model")
        self.members = list(members)
        self.names = [str(n) for n in (names or [f"model {i}" for i in range(len(members))])]
        self.scale = 1.0 / math.sqrt(len(self.members))
        joined = "\n".join(m.identity for m in self.members)
        self.identity = hashlib.sha256(f"soundsift ensemble\n{joined}".encode()).hexdigest()
        self.config = {"ensemble": [m.config for m in self.members]}
        self.tau = sum(float(m.tau) for m in self.members) / len(self.members)
        self.meta = {"ensemble": self.names}

    @property
    def sample_rate(self) -> int:
        return max(int(m.sample_rate) for m in self.members)

    @property
    def embed_dim(self) -> int:
        return sum(int(m.embed_dim) for m in self.members)

    def to(self, device) -> ModelEnsemble:
        self.members = [m.to(device) for m in self.members]
        return self

    def eval(self) -> ModelEnsemble:
        self.members = [m.eval() for m in self.members]
        return self

    def _at_rate(self, waveforms: Sequence[np.ndarray], rate: int) -> Sequence[np.ndarray]:
        if rate == self.sample_rate:
            return waveforms
        import soxr

        return [soxr.resample(np.asarray(w, dtype=np.float32), self.sample_rate, rate) for w in waveforms]

    def embed_waveforms(self, waveforms: Sequence[np.ndarray], batch_size: int = 32,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Mono waveforms at ``sample_rate`` -> (N, sum of dims) unit vectors; ``progress`` is called
        as the last member finishes batches (each file counts once)."""
        last = len(self.members) - 1
        parts = [m.embed_waveforms(self._at_rate(waveforms, int(m.sample_rate)), batch_size,
                                   progress=progress if i == last else None)
                 for i, m in enumerate(self.members)]
        return np.concatenate(parts, axis=1).astype(np.float32) * np.float32(self.scale)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Captions -> (N, sum of dims) unit vectors."""
        parts = [m.embed_texts(texts, batch_size) for m in self.members]
        return np.concatenate(parts, axis=1).astype(np.float32) * np.float32(self.scale)

    def embed_audio(self, audio: Any, batch_size: int = 32) -> np.ndarray:
        """Audio files and/or mono waveforms at ``sample_rate`` -> (N, sum of dims) unit vectors: the
        members' embeddings concatenated and scaled, as ``embed_waveforms`` (and an index) makes them."""
        from soundsift.audio import as_waveforms

        return self.embed_waveforms(as_waveforms(audio, self.sample_rate), batch_size)

    def embed_text(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """A caption or captions -> (N, sum of dims) unit vectors (``embed_texts``)."""
        return self.embed_texts([texts] if isinstance(texts, str) else list(texts), batch_size)
