"""Batched embedding of clips of different lengths: each clip embeds as it would alone.

Every built-in audio encoder (tiny, random) is run through ``DualEncoder.embed_waveforms`` with clips of
several lengths (shorter than a snippet/window, about one, more than two) padded into shared batches,
and compared with each clip's batch-of-one embedding (unit vectors, max abs difference <= 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from soundsift.data.dataset import length_grouped_batches
from soundsift.encoders import AudioEncoder, audio_encoder_names, register_audio_encoder
from soundsift.encoders.registry import AUDIO_ENCODERS
from soundsift.model import DualEncoder

TOL = 1e-5  # max abs difference between unit vectors

# encoder spec, clip lengths in samples (snippet/window sizes in the comments)
CASES: dict[str, tuple[dict, list[int]]] = {
    "cnn": ({"name": "cnn", "size": "tiny"}, [3000, 7000, 8001, 12000, 20000]),
    "crnn": ({"name": "crnn", "size": "tiny"}, [3000, 7000, 8001, 12000, 20000]),
    # 0.5-s windows = 8000 samples
    "patchformer": ({"name": "patchformer", "size": "tiny", "window_s": 0.5, "min_window_s": 0.1},
                    [3000, 7000, 8001, 12000, 20000]),
    # 0.5-s snippets = 16000 samples
    "passt": ({"name": "passt", "size": "tiny", "segment_seconds": 0.5}, [2000, 9000, 16000, 20000, 40000]),
    "mn": ({"name": "mn", "size": "tiny"}, [300, 2000, 9000, 16000, 20000, 40000]),
    "mn-snippets": ({"name": "mn", "size": "tiny", "segment_seconds": 0.5},
                    [300, 2000, 9000, 16000, 20000, 40000]),
    # 0.5-s snippets = 8000 samples
    "atst": ({"name": "atst", "size": "tiny", "segment_seconds": 0.5}, [2000, 7000, 8000, 12000, 20000]),
    # 0.96-s patches (15600 samples) every 0.48 s
    "yamnet": ({"name": "yamnet", "tiny": True, "pretrained": False}, [5000, 9000, 15600, 20000, 40000]),
    "yamnet-bridge": ({"name": "yamnet-bridge", "tiny": True}, [5000, 9000, 15600, 20000, 40000]),
    # 1.295-s windows = 20720 samples
    "ast": ({"name": "ast", "random_init": True}, [3000, 10000, 20720, 25000, 50000]),
    # 2-s windows = 32000 samples
    "clap": ({"name": "clap", "random_init": True}, [3000, 20000, 32000, 40000, 70000]),
    "laion-clap": ({"name": "laion-clap", "tiny": True}, [3000, 20000, 32000, 40000, 70000]),
}


def _builtin_audio_encoders() -> set[str]:
    return {n for n in audio_encoder_names() if AUDIO_ENCODERS.get(n).__module__.startswith("soundsift.")}


def test_every_builtin_audio_encoder_is_covered():
    assert _builtin_audio_encoders() <= {spec["name"] for spec, _ in CASES.values()}


def _model(spec: dict) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(spec, "tiny-bert", embed_dim=16)


def _record_batches(model: DualEncoder) -> list[list[int]]:
    """Spy on the audio tower: the ``lengths`` of every batch it is called with."""
    seen: list[list[int]] = []
    forward = model.audio.forward

    def spy(waveform, lengths=None):
        seen.append(lengths.tolist() if lengths is not None else [waveform.shape[1]] * waveform.shape[0])
        return forward(waveform, lengths)

    model.audio.forward = spy
    return seen


@pytest.mark.parametrize("case", list(CASES))
def test_batched_clips_embed_as_they_would_alone(case):
    spec, lengths = CASES[case]
    model = _model(spec)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    order = rng.permutation(len(waves))  # not sorted by length: the output keeps the input order
    waves = [waves[i] for i in order]
    alone = np.concatenate([model.embed_waveforms([w], 1) for w in waves])
    assert getattr(model.audio, "batch_invariant", False)
    model.EMBED_MAX_PADDING = 0.999  # everything in one padded batch (the default bounds the padding)
    seen = _record_batches(model)
    done: list[int] = []
    batched = model.embed_waveforms(waves, batch_size=8, progress=done.append)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(lengths)  # one batch, really mixed
    assert sum(done) == len(waves)
    assert batched.shape == alone.shape and batched.dtype == np.float32
    diff = float(np.abs(batched - alone).max())
    assert diff <= TOL, f"{case}: batched differs from alone by {diff:.3g}"
    # smaller batches and the default padding bound give the same embeddings
    del model.EMBED_MAX_PADDING
    np.testing.assert_allclose(model.embed_waveforms(waves, batch_size=2), alone, atol=TOL, rtol=0)


class _LengthBlind(AudioEncoder):
    """An encoder that ignores ``lengths`` (padding changes its output): not batch invariant."""

    sample_rate = 16000
    out_dim = 3

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, self.out_dim)

    def forward(self, waveform, lengths=None):
        return self.lin(torch.stack([waveform.abs().mean(1), waveform.std(1)], 1))


register_audio_encoder("batched-test-length-blind", _LengthBlind)


def test_encoders_without_the_flag_are_batched_only_with_equal_lengths():
    model = _model({"name": "batched-test-length-blind"})
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (800, 1600, 800, 3200, 1600, 800)]
    seen = _record_batches(model)
    batched = model.embed_waveforms(waves, batch_size=2)
    assert all(len(set(b)) == 1 for b in seen) and sum(len(b) for b in seen) == len(waves)
    alone = np.concatenate([model.embed_waveforms([w], 1) for w in waves])
    np.testing.assert_allclose(batched, alone, atol=1e-6, rtol=0)


def test_length_grouped_batches_with_a_padding_bound():
    lengths = [100, 300, 95, 290, 100, 1000, 80, 310]
    assert length_grouped_batches(lengths, 2) == [[0, 4], [1], [2], [3], [5], [6], [7]]  # exact groups
    batches = length_grouped_batches(lengths, 3, max_padding=0.25)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == [[5], [7, 1, 3], [0, 4, 2], [6]]  # longest first, ties in index order
    for b in batches:
        assert len(b) <= 3 and min(lengths[i] for i in b) >= 0.75 * max(lengths[i] for i in b)
    assert length_grouped_batches(lengths, 8, max_padding=0.95)[0] == [5, 7, 1, 3, 0, 4, 2, 6]
    assert length_grouped_batches([], 4, max_padding=0.2) == []
    with pytest.raises(ValueError):
        length_grouped_batches(lengths, 2, max_padding=1.0)
