"""Data pipeline at scale: header-only readability scan, windowed reads, shared preload, bad clips replaced.

References are the naive paths: decode the whole file with ``load_audio`` and slice it with ``crop``.
"""

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from soundsift.audio import audio_info, load_audio, load_audio_window, resampled_length
from soundsift.data.dataset import AudioStore, ClipDataset, PairDataset, collate_pairs, crop
from soundsift.data.records import Clip, SplitData
from soundsift.errors import AudioError


def noise(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, channels)).astype(np.float32) * 0.2
    return x[:, 0] if channels == 1 else x


def write_clips(tmp_path: Path, n: int = 4, rate: int = 44100, seconds: float = 1.5) -> list[Clip]:
    clips = []
    for i in range(n):
        path = tmp_path / f"clip {i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, noise(int(seconds * rate) + 37 * i, channels=1 + i % 2, seed=i), rate)
        clips.append(Clip(path.name, path, (f"caption {i}a", f"caption {i}b")))
    return clips


def truncated_flac(path: Path, seconds: float = 1.0, rate: int = 44100) -> Path:
    """A FLAC whose header is intact (soundfile.info reads it) but whose audio frames are cut off."""
    full = path.with_suffix(".full.flac")
    sf.write(full, noise(int(seconds * rate), seed=9), rate, format="FLAC")
    path.write_bytes(full.read_bytes()[:200])
    full.unlink()
    return path


def test_resampled_length_matches_soxr():
    import soxr

    for rate_in, rate_out in [(44100, 32000), (48000, 16000), (16000, 44100), (22050, 32000), (32000, 32000)]:
        for n in (1, 80, 441, 12345, 661577):
            assert resampled_length(n, rate_in, rate_out) == len(soxr.resample(np.zeros(n, np.float32), rate_in, rate_out))


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 32000), (48000, 32000), (16000, 32000), (32000, 32000)])
def test_windowed_read_equals_crop_of_the_decoded_waveform(tmp_path, rate_in, rate_out):
    for ext, channels in (("wav", 1), ("flac", 2)):
        path = tmp_path / f"x.{ext}"
        sf.write(path, noise(3 * rate_in + 11, channels), rate_in)
        full = load_audio(path, rate_out)
        assert audio_info(path).length_at(rate_out) == len(full)
        for start in (0, 1, 777, len(full) // 2, len(full) - rate_out, len(full) - 3):
            window = load_audio_window(path, rate_out, start, rate_out)
            ref = full[start : start + rate_out]
            assert window.dtype == np.float32 and len(window) == len(ref)
            np.testing.assert_allclose(window, ref, rtol=0, atol=1e-4)  # edges included


def test_windowed_read_reads_only_the_window(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, noise(20 * 44100), 44100)
    asked = []
    real = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        asked.append(frames)
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    assert len(load_audio_window(path, 32000, 5 * 32000, 32000)) == 32000
    assert asked and 0 < asked[0] < 1.2 * 44100  # about one second of 20, not the whole file


def test_header_scan_does_not_decode_and_skips_bad_files(tmp_path, monkeypatch):
    clips = write_clips(tmp_path)
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all" * 10)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    bad = [Clip(n, tmp_path / n, ("x",)) for n in ("garbage.wav", "empty.wav", "gone.flac")]
    split = SplitData("development", [clips[0], *bad, *clips[1:]])

    def no_decoding(*args, **kwargs):
        raise AssertionError("the readability scan decoded audio")

    monkeypatch.setattr(sf, "read", no_decoding)
    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    kept = AudioStore(32000, preload=False).readable(split, progress=False)
    assert [c.clip_id for c in kept.clips] == [c.clip_id for c in clips]
    messages = [str(p) for p in kept.problems]
    assert len(messages) == 3
    assert any("garbage.wav" in m and "decode" in m for m in messages)
    assert any("empty.wav" in m and "no audio samples" in m for m in messages)
    assert any("gone.flac" in m and "not found" in m for m in messages)
    # "auto" preloads only after the scan, and the decode is the preload: one read per kept clip
    monkeypatch.undo()
    reads = []
    real = sf.read
    monkeypatch.setattr(sf, "read", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    store = AudioStore(32000, preload="auto")
    assert len(store.readable(split, progress=False).clips) == len(clips)
    assert len(reads) == len(clips) and store.preloaded_bytes > 0


def test_a_corrupt_clip_with_a_valid_header_is_a_problem_when_preloading(tmp_path):
    clips = write_clips(tmp_path, 2)
    bad = Clip("cut.flac", truncated_flac(tmp_path / "cut.flac"), ("x",))
    split = SplitData("development", [clips[0], bad, clips[1]])
    assert len(AudioStore(16000, preload=False).readable(split, progress=False).clips) == 3  # header is fine
    kept = AudioStore(16000, preload=True).readable(split, progress=False)
    assert [c.clip_id for c in kept.clips] == [clips[0].clip_id, clips[1].clip_id]
    assert "cut.flac" in str(kept.problems[0]) and "decode" in str(kept.problems[0])


@pytest.mark.parametrize("preload", [False, True])
def test_store_crops_equal_the_naive_crop_with_the_same_offsets(tmp_path, preload):
    clips = write_clips(tmp_path, 4, seconds=1.5)
    store = AudioStore(32000, preload=preload)
    split = store.readable(SplitData("development", clips), progress=False)
    assert (store.preloaded_bytes > 0) == preload
    max_samples = 32000 // 2
    for clip in split.clips:
        full = load_audio(clip.path, 32000)
        assert store.length(clip) == len(full)
        for seed in range(5):
            got = store.get(clip, max_samples, np.random.default_rng(seed))
            ref = crop(full, max_samples, np.random.default_rng(seed))  # same offset, same rng draw
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
        np.testing.assert_allclose(store.get(clip, max_samples), full[:max_samples], rtol=0, atol=1e-4)
        np.testing.assert_allclose(store.window(clip, 100, 1000), full[100:1100], rtol=0, atol=1e-4)
        assert np.array_equal(store.get(clip), full)
    ds = ClipDataset(split, store, max_seconds=0.5)
    assert len(ds[0][0]) == 16000


def test_pair_dataset_crops_are_deterministic_in_seed_epoch_item(tmp_path):
    clips = write_clips(tmp_path, 3, seconds=2.0)
    store = AudioStore(32000, preload=False)
    split = store.readable(SplitData("development", clips), progress=False)
    ds = PairDataset(split, store, "one", max_seconds=0.5, seed=3)
    full = [load_audio(c.path, 32000) for c in split.clips]
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            wav, _, clip_i, cap_i = ds[i]
            rng = np.random.default_rng((3, epoch, i))  # the naive reference: draw the caption, then crop
            assert cap_i == 2 * i + int(rng.integers(0, 2))
            np.testing.assert_allclose(wav, crop(full[clip_i], 16000, rng), rtol=0, atol=1e-4)
            np.testing.assert_allclose(ds[i][0], wav, rtol=0, atol=0)


def test_undecodable_clip_is_replaced_in_its_batch_and_reported(tmp_path):
    clips = write_clips(tmp_path, 3)
    bad = Clip("cut.flac", truncated_flac(tmp_path / "cut.flac"), ("bad a", "bad b"))
    store = AudioStore(16000, preload=False)
    split = store.readable(SplitData("development", [clips[0], bad, clips[1], clips[2]]), progress=False)
    assert len(split.clips) == 4  # the header scan cannot see it
    ds = PairDataset(split, store, "all", max_seconds=0.5)
    items = [ds[i] for i in range(len(ds))]
    # items 2 and 3 are the bad clip's captions: both become item 4 (the next clip's first caption)
    assert [it[2] for it in items] == [0, 0, 2, 2, 2, 2, 3, 3]
    assert [it[3] for it in items] == [0, 1, 4, 4, 4, 5, 6, 7]
    batch = collate_pairs(items)
    assert len(batch.problems) == 2 and all("cut.flac" in str(p) and "decode" in str(p) for p in batch.problems)
    assert "item 2 replaced by item 4" in str(batch.problems[0])
    # typed records, not strings to cut apart again: the file, why, and which item replaced which
    first = batch.problems[0]
    assert (first.problem.file, first.problem.row, first.item, first.replacement) == (str(bad.path), None, 2, 4)
    assert first.problem.message.startswith("cannot decode") and "cut.flac" not in first.problem.message
    assert collate_pairs(items[:2]).problems == []
    # an item carries its report through pickling (DataLoader worker -> main process)
    again = pickle.loads(pickle.dumps(items[2]))
    assert again.problems == items[2].problems and again[1] == items[2][1]
    # through real worker processes too
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_pairs, num_workers=2)
    reports = [p for b in loader for p in b.problems]
    assert len(reports) == 2 and all("cut.flac" in str(p) for p in reports)


def test_all_clips_failing_raises_one_audio_error(tmp_path):
    bad = [Clip(f"cut{i}.flac", truncated_flac(tmp_path / f"cut{i}.flac"), ("x",)) for i in range(2)]
    store = AudioStore(16000, preload=False)
    ds = PairDataset(store.readable(SplitData("development", bad), progress=False), store, "one")
    with pytest.raises(AudioError, match="cut"):
        ds[0]


def test_preload_is_one_buffer_and_is_not_pickled(tmp_path):
    clips = write_clips(tmp_path, 4)
    store = AudioStore(16000, preload=True)
    store.readable(SplitData("development", clips), progress=False)
    store.readable(SplitData("development", clips[:2]), progress=False)  # already held: not read again
    assert len(store._buffers) == 1
    views = [store.get(c) for c in clips]
    assert all(v.base is store._buffers[0] for v in views)
    copy = pickle.loads(pickle.dumps(store))  # a spawned worker's copy reads from the files
    assert copy.preloaded_bytes == 0 and len(pickle.dumps(store)) < 10_000
    for clip, view in zip(clips, views):
        assert np.array_equal(copy.get(clip), view)


def test_tiny_training_run_survives_an_undecodable_clip(tmp_path):
    from soundsift.cli.main import main

    data = tmp_path / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--seed", "0", "--out", str(data)]) == 0
    victim = sorted((data / "development").glob("*.wav"))[3]
    truncated_flac(victim)  # FLAC bytes under a .wav name: libsndfile reads the header from the content
    assert audio_info(victim).frames > 0
    with pytest.raises(AudioError):
        load_audio(victim, 16000)
    out = tmp_path / "run"
    rc = main([
        "-q", "train", "--config", "demo/stage1.yaml", f"data.root={data}", f"out_dir={out}",
        "model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}",
        "model.embed_dim=16", "optim.epochs=1", "optim.batch_size=8", "trainer.progress_bar=false",
        "data.preload=false", "data.max_seconds=1.0", "data.num_workers=1",
    ])
    assert rc == 0
    assert (out / "model.pt").is_file()
    problems = (out / "problems.txt").read_text(encoding="utf-8")  # the header scan kept the clip,
    line = next(line for line in problems.splitlines() if victim.name in line)  # training replaced it
    # (batch size 8 divides the 40 training items: no item is dropped, the victim is always drawn)
    assert line.startswith("[train] ") and "cannot decode audio" in line and "replaced" in line
