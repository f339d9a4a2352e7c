"""The embedded benchmark generator: layout, determinism, captions, ground truth and audio grounding."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from soundsift.data.synth import benchmark as synth
from soundsift.data.synth.benchmark import (
    PRESETS,
    build_split,
    generate,
    ground_truth,
    ground_truth_block,
    load_ground_truth,
)
from soundsift.data.synth.facts import (
    CLASSES,
    NONE,
    PITCHED,
    POSITIONS,
    REPETITIVE,
    SPLITS,
    ClipFacts,
    Event,
    position,
)
from soundsift.data.synth.lexicon import eval_only_words
from soundsift.data.synth.styles import get_style

HEADER = ["file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("a"), "tiny", seed=0, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z'-]*", text.lower()))


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = _files(generate(tmp_path / "b", "tiny", seed=0, progress=False))
    first = _files(tiny)
    assert again == first
    assert not any(name.endswith(".tmp") for name in first)  # atomic writes leave nothing behind
    other = _files(generate(tmp_path / "c", "tiny", seed=1, progress=False))
    for split in SPLITS:
        csv_name = f"clotho_captions_{split}.csv"
        assert other[csv_name] != first[csv_name]
    assert other["development/synth_00000.wav"] != first["development/synth_00000.wav"]


def test_clotho_layout_and_captions(tiny):
    names = {p.name for p in tiny.iterdir()}
    for split in SPLITS:
        assert {split, f"clotho_captions_{split}.csv", f"synth_ground_truth_{split}.npz"} <= names
        raw = (tiny / f"clotho_captions_{split}.csv").read_bytes()
        assert raw.startswith(b"file_name,caption_1,caption_2,caption_3,caption_4,caption_5\r\n")
        rows = _read_csv(tiny / f"clotho_captions_{split}.csv")
        assert rows[0] == HEADER
        assert len(rows) - 1 == PRESETS["tiny"].clips(split)
        for row in rows[1:]:
            assert len(row) == 6 and (tiny / split / row[0]).is_file()
            captions = row[1:]
            assert all(c.strip() for c in captions) and len(set(captions)) == 5
            assert all(5 <= len(c.split()) <= 20 for c in captions), captions
        wavs = sorted(p.name for p in (tiny / split).iterdir())
        assert wavs == sorted(r[0] for r in rows[1:])
    assert "synth_info.json" in names


def test_special_file_names_round_trip(tiny):
    for split in SPLITS:
        names = [r[0] for r in _read_csv(tiny / f"clotho_captions_{split}.csv")[1:]]
        odd = [n for n in names if not n.isascii() and ("," in n or " " in n)]
        assert len(odd) >= 2, names
        assert any("," in n for n in names) and any(not n.isascii() for n in names)
        assert all((tiny / split / n).is_file() for n in odd)
    assert any("," in r[1] for s in SPLITS for r in _read_csv(tiny / f"clotho_captions_{s}.csv")[1:])


def test_wavs_are_16bit_mono_at_the_rate_and_duration(tiny):
    sf = pytest.importorskip("soundfile")
    for split in SPLITS:
        for path in sorted((tiny / split).iterdir())[:4]:
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == int(PRESETS["tiny"].duration * 16000)
            audio, _ = sf.read(str(path), dtype="float32")
            assert 1e-4 < float(np.sqrt(np.mean(audio**2))) and np.abs(audio).max() <= 1.0


def test_ground_truth_file(tiny):
    for split in SPLITS:
        gt = load_ground_truth(tiny, split)
        rows = _read_csv(tiny / f"clotho_captions_{split}.csv")[1:]
        n = len(rows)
        assert list(gt["file_names"]) == [r[0] for r in rows]
        assert list(gt["captions"]) == [c for r in rows for c in r[1:]]
        holds, fraction = gt["holds"], gt["fraction"]
        assert holds.shape == fraction.shape == (5 * n, n)
        assert holds.dtype == np.bool_ and fraction.dtype == np.float32
        own = np.repeat(np.arange(n), 5)
        assert holds[np.arange(5 * n), own].all() and (fraction[np.arange(5 * n), own] == 1).all()
        assert np.array_equal(holds, fraction == 1)
        assert ((fraction >= 0) & (fraction <= 1)).all()
    assert load_ground_truth(tiny, "test")["holds"].shape[1] == PRESETS["tiny"].evaluation


def _holds(facts: ClipFacts, assertion: tuple[str, int, int, int]) -> bool:
    """Plain, loop-based reading of one assertion against one clip's facts (the test's own oracle)."""
    kind, c, v, c2 = assertion
    event = {e.cls: e for e in facts.events}
    if kind == "before":
        return c in event and c2 in event and event[c].offset <= event[c2].onset
    if c not in event:
        return False
    e = event[c]
    if kind == "has":
        return True
    if kind == "pos":
        d = facts.duration
        pos = {"start": e.onset <= 0.1 * d and e.offset <= 0.5 * d and not e.offset >= 0.9 * d,
               "end": e.onset >= 0.5 * d and e.offset >= 0.9 * d,
               "throughout": e.onset <= 0.1 * d and e.offset >= 0.9 * d}
        return pos[POSITIONS[v]]
    return getattr(e, kind) == v


def test_ground_truth_agrees_with_independent_evaluation(tiny):
    split = build_split("development", "tiny", seed=0)
    gt = load_ground_truth(tiny, "development")
    flat = [c for caps in split.captions for c in caps]
    assert [c.text for c in flat] == list(gt["captions"])  # the facts-only path matches what was written
    rng = np.random.default_rng(0)
    for j in rng.choice(len(flat), size=25, replace=False):
        cap = flat[j]
        truth = np.array([[_holds(f, a) for a in cap.assertions] for f in split.clips])
        assert np.array_equal(gt["holds"][j], truth.all(axis=1)), cap.text
        assert np.allclose(gt["fraction"][j], truth.mean(axis=1)), cap.text


def test_some_caption_of_every_clip_describes_another_clip():
    split = build_split("development", "tiny", seed=3, n_clips=60)
    holds = ground_truth(split)["holds"]
    n = len(split.clips)
    other = holds.copy()
    other[np.arange(5 * n), np.repeat(np.arange(n), 5)] = False
    assert other.any(axis=1).reshape(n, 5).any(axis=1).all()
    assert 0.0 < other.mean() < 0.2  # shared, but far from everything matching everything


def test_every_caption_is_partial_or_full_and_one_is_minimal():
    split = build_split("validation", "tiny", seed=5, n_clips=40)
    for facts, caps in zip(split.clips, split.captions):
        assert len(caps) == 5
        present = {e.cls for e in facts.events}
        for cap in caps:
            assert {a[1] for a in cap.assertions if a[0] == "has"} <= present
        assert min(len(c.assertions) for c in caps) == 1


def test_held_out_phrasings_only_in_evaluation(tiny):
    held = eval_only_words()
    assert len(held) > 20
    dev = build_split("development", "small", seed=0).caption_texts()
    for split in ("development", "validation"):
        texts = dev if split == "development" else list(load_ground_truth(tiny, split)["captions"])
        leaked = [(t, _words(t) & held) for t in texts if _words(t) & held]
        assert not leaked, leaked[:3]
    evaluation = build_split("evaluation", "small", seed=0).caption_texts()
    share = np.mean([bool(_words(t) & held) for t in evaluation])
    assert 0.2 < share < 0.9


def test_small_preset_balance_without_audio():
    for split in SPLITS:
        s = build_split(split, "small", seed=0)
        events = [e for f in s.clips for e in f.events]
        assert {e.cls for e in events} == set(range(len(CLASSES))), split
        if split != "development":
            continue
        for c, name in enumerate(CLASSES):
            mine = [e for e in events if e.cls == c]
            assert {e.level for e in mine} == {0, 1}
            assert {e.pitch for e in mine} == ({0, 1} if name in PITCHED else {NONE})
            if name in REPETITIVE:
                assert {0, 1} <= {e.rate for e in mine}
        n_events = np.bincount([len(f.events) for f in s.clips], minlength=4)[1:]
        style = get_style(PRESETS["small"].style)  # 1, 2 and 3 events as often as the style says
        assert ((n_events > 0) == (np.array(style.events_p) > 0)).all()
        orders = sum(a.offset <= b.onset for f in s.clips for a in f.events for b in f.events if a is not b)
        assert orders > 100
        assert {position(e.onset, e.offset, s.duration) for e in events} == {NONE, 0, 1, 2}


def test_compact_ground_truth_and_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "DENSE_LIMIT", 10)
    root = generate(tmp_path, "tiny", seed=2, progress=False, n_development=8, n_validation=3,
                    n_evaluation=3, duration=1.0)
    compact = load_ground_truth(root, "development", dense=False)
    assert "holds" not in compact
    full = load_ground_truth(root, "development")
    expected = ground_truth(build_split("development", "tiny", seed=2, n_clips=8, duration=1.0))
    assert np.array_equal(full["holds"], expected["holds"])
    caps, clips = [0, 7, 13, 39], [5, 0, 2]
    holds, fraction = ground_truth_block(compact, caps, clips)
    assert np.array_equal(holds, expected["holds"][np.ix_(caps, clips)])
    assert np.array_equal(fraction, expected["fraction"][np.ix_(caps, clips)])


def test_presets_and_bad_input(tmp_path):
    assert set(PRESETS) == {"tiny", "small", "medium", "large"}
    assert (PRESETS["small"].development, PRESETS["small"].duration) == (600, 4.0)
    with pytest.raises(ValueError, match="unknown synth preset"):
        generate(tmp_path, "huge", progress=False)
    with pytest.raises(ValueError, match="at least 1 clip"):
        generate(tmp_path, "tiny", n_validation=0, progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        build_split("training-set", "tiny")
    with pytest.raises(FileNotFoundError, match="synth_ground_truth_development"):
        load_ground_truth(tmp_path, "development")


def _single(cls: int, level: int, pitch: int, seed: int, dur: float = 1.5, onset: float = 0.0) -> np.ndarray:
    from soundsift.data.synth.sounds import render_clip

    name = CLASSES[cls]
    event = Event(cls, level, pitch if name in PITCHED else NONE, 1 if name in REPETITIVE else NONE,
                  5.0 if name in REPETITIVE else 0.0, onset, dur)
    return render_clip(ClipFacts(dur, (event,)), 16000, seed, "development", 1000 * cls + seed)


def _logmel(x: np.ndarray, sr: int = 16000, n_mels: int = 64) -> np.ndarray:
    mel = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), n_mels + 2)
    pts = 700 * (np.exp(mel / 1127) - 1)
    f = np.fft.rfftfreq(512, 1 / sr)
    fb = np.stack([np.clip(np.minimum((f - a) / (b - a), (c - f) / (c - b)), 0, None)
                   for a, b, c in zip(pts, pts[1:], pts[2:])])
    idx = np.arange(400)[None, :] + 160 * np.arange(1 + (len(x) - 400) // 160)[:, None]
    return np.log(np.abs(np.fft.rfft(x[idx] * np.hanning(400), 512)) @ fb.T + 1e-3)


def test_classes_distinguishable_on_log_mel_and_attributes_grounded():
    feats, labels = [], []
    for c in range(len(CLASSES)):
        for s in range(6):
            m = _logmel(_single(c, 1, s % 2, s))
            m = m - np.median(m, axis=0)
            feats.append(np.concatenate([m.mean(0), m.std(0), np.abs(np.diff(m, axis=0)).mean(0)]))
            labels.append(c)
    x, y = np.array(feats), np.array(labels)
    x = (x - x.mean(0)) / x.std(0)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[np.argmin(d, axis=1)] == y).mean() > 0.8  # leave-one-out 1-NN on log-mel statistics
    # pitch: the high register puts the energy higher on the mel axis
    siren = CLASSES.index("siren")
    centroid = [np.argmax(_logmel(_single(siren, 1, p, 3)).mean(0)) for p in (0, 1)]
    assert centroid[1] > centroid[0]
    # level: the event (second half) over the background alone (first half), in dB
    whistle = CLASSES.index("whistle")
    for level, (lo, hi) in ((0, (1.0, 11.0)), (1, (16.0, 28.0))):
        for seed in range(3):
            x = _single(whistle, level, 0, seed, onset=0.75).astype(np.float64)
            ratio = 20 * np.log10(np.sqrt(np.mean(x[13000:] ** 2) / np.mean(x[:11000] ** 2)))
            assert lo < ratio < hi, (level, ratio)
