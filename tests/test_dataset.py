from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from soundsift.data.dataset import (
    AudioStore,
    ClipDataset,
    PairDataset,
    collate_pairs,
    crop,
    flatten_captions,
    length_grouped_batches,
    pad,
)
from soundsift.data.records import Clip, SplitData


def make_split(tmp_path: Path, lengths=(1600, 800, 1600), captions=(("a", "b"), ("c",), ("d", "e", "f"))):
    clips = []
    for i, (n, caps) in enumerate(zip(lengths, captions)):
        path = tmp_path / f"clip {i}, é.wav"
        sf.write(path, np.full(n, 0.1 * (i + 1), dtype=np.float32), 16000)
        clips.append(Clip(path.name, path, tuple(caps)))
    return SplitData("development", clips)


def test_flatten_captions_order_and_clip_index(tmp_path):
    split = make_split(tmp_path)
    texts, clip_of = flatten_captions(split)
    assert texts == ["a", "b", "c", "d", "e", "f"]
    assert clip_of == [0, 0, 1, 2, 2, 2]


def test_pair_dataset_all_pairs_and_collate(tmp_path):
    split = make_split(tmp_path)
    store = AudioStore(16000, preload=True)
    split = store.readable(split, progress=False)
    ds = PairDataset(split, store, "all")
    assert len(ds) == 6
    wav, text, clip_i, cap_i = ds[3]
    assert (text, clip_i, cap_i) == ("d", 2, 3)
    assert np.allclose(wav, 0.3, atol=1e-4)
    batch = collate_pairs([ds[i] for i in range(6)])
    assert batch.waveform.shape == (6, 1600)
    assert batch.lengths.tolist() == [1600, 1600, 800, 1600, 1600, 1600]
    assert torch.all(batch.waveform[2, 800:] == 0)
    assert batch.clip_index.tolist() == [0, 0, 1, 2, 2, 2]
    assert batch.caption_index.tolist() == list(range(6))


def test_pair_dataset_one_caption_per_clip_is_deterministic_per_epoch(tmp_path):
    split = make_split(tmp_path)
    store = AudioStore(16000, preload=True)
    ds = PairDataset(store.readable(split, progress=False), store, "one", seed=1)
    assert len(ds) == 3
    picks = [ds[2][3] for _ in range(3)]
    assert len(set(picks)) == 1 and picks[0] in (3, 4, 5)  # a caption of clip 2
    seen = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        seen.add(ds[2][3])
    assert seen == {3, 4, 5}


def test_unreadable_audio_is_skipped_and_reported(tmp_path):
    split = make_split(tmp_path)
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all" * 10)
    bad = Clip("garbage.wav", tmp_path / "garbage.wav", ("x",))
    missing = Clip("gone.wav", tmp_path / "gone.wav", ("y",))
    split = SplitData("development", [split.clips[0], bad, missing, split.clips[1]])
    kept = AudioStore(16000).readable(split, progress=False)
    assert [c.clip_id for c in kept.clips] == [split.clips[0].clip_id, split.clips[3].clip_id]
    messages = [str(p) for p in kept.problems]
    assert any("garbage.wav" in m and "decode" in m for m in messages)
    assert any("gone.wav" in m and "not found" in m for m in messages)


def test_resampling_and_crop(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros((44100, 2), dtype=np.float32), 44100)  # 1 s stereo at 44.1 kHz
    split = SplitData("x", [Clip("a.wav", path, ("c",))])
    store = AudioStore(16000, preload=False)
    ds = ClipDataset(store.readable(split, progress=False), store, max_seconds=0.5)
    wav, _ = ds[0]
    assert wav.ndim == 1 and len(wav) == 8000
    x = np.arange(10)
    assert crop(x, 4, None).tolist() == [0, 1, 2, 3]
    starts = {int(crop(x, 4, np.random.default_rng(s))[0]) for s in range(50)}
    assert starts == set(range(7))


def test_length_grouped_batches_never_mix_lengths():
    lengths = [5, 3, 5, 5, 3, 7]
    batches = length_grouped_batches(lengths, 2)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) <= 2 and len({lengths[i] for i in b}) == 1


def test_pad_matches_a_zero_filled_reference():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (5, 9, 1, 9)]
    waves.append(rng.standard_normal(3))  # float64 input is cast like a torch copy would
    out, lengths = pad(waves)
    assert out.dtype == torch.float32 and lengths.tolist() == [5, 9, 1, 9, 3]
    ref = torch.zeros(len(waves), 9, dtype=torch.float32)
    for row, w in enumerate(waves):
        ref[row, : len(w)] = torch.from_numpy(w)
    assert torch.equal(out, ref)  # bit-identical, padding exactly zero
