"""The benchmark statistics of ``data info`` (soundsift.data.stats) against hand counts and a naive
reference, the calibrated synth preset, and the CLI."""

import itertools
import string

import numpy as np
import pytest

from soundsift.cli.main import main
from soundsift.data import stats
from soundsift.data.stats import CLOTHO_REFERENCE, caption_stats, relevance_stats, words
from soundsift.data.synth.benchmark import build_split, ground_truth, relevance_queries


def naive_overlap(clips):
    """Mean Jaccard of the word sets of every pair of captions of different clips, written plainly."""
    items = [(c, set(t.lower().translate(str.maketrans("", "", string.punctuation)).split()))
             for c, caps in enumerate(clips) for t in caps]
    values = [len(a & b) / len(a | b) for (ca, a), (cb, b) in itertools.combinations(items, 2) if ca != cb and a | b]
    return sum(values) / len(values)


def test_words_follow_the_papers_text_normalisation():
    assert words("A dog, barking; LOUDLY!  twice.") == ["a", "dog", "barking", "loudly", "twice"]
    assert words("kid's room") == ["kids", "room"]


def test_caption_statistics_by_hand():
    clips = [["A dog barks.", "a dog"], ["Rain falls"], []]
    s = caption_stats(clips)
    assert (s.n_clips, s.n_captions) == (3, 3)
    assert (s.captions_per_clip_mean, s.captions_per_clip_min, s.captions_per_clip_max) == (1.0, 0, 2)
    assert (s.words_mean, s.words_median, s.words_min, s.words_max) == (7 / 3, 2.0, 2, 3)
    # pairs of different clips: {a,dog,barks}-{rain,falls} 0/5, {a,dog}-{rain,falls} 0/4
    assert s.word_overlap == 0.0
    clips = [["a dog barks"], ["a dog howls", "rain"]]
    # {a,dog,barks}-{a,dog,howls}: 2/4; {a,dog,barks}-{rain}: 0/4 (the same clip's pair does not count)
    assert caption_stats(clips).word_overlap == pytest.approx(0.25)


def test_caption_overlap_matches_a_naive_reference_on_random_captions():
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(30)]
    clips = [[" ".join(rng.choice(vocab, size=rng.integers(1, 8))) + rng.choice(["", ".", "!"])
              for _ in range(rng.integers(1, 6))] for _ in range(25)]
    s = caption_stats(clips)
    assert s.word_overlap == pytest.approx(naive_overlap(clips), rel=1e-6)
    assert s.overlap_captions == s.n_captions
    lengths = [len(t.split()) for caps in clips for t in caps]
    assert s.words_mean == pytest.approx(np.mean(lengths)) and s.words_max == max(lengths)


def test_large_splits_measure_the_overlap_on_a_seeded_sample(monkeypatch):
    rng = np.random.default_rng(2)
    vocab = [f"w{i}" for i in range(12)]
    clips = [[" ".join(rng.choice(vocab, size=4)) for _ in range(3)] for _ in range(60)]
    exact = naive_overlap(clips)
    monkeypatch.setattr(stats, "MAX_OVERLAP_CAPTIONS", 90)
    sampled = caption_stats(clips)
    assert sampled.overlap_captions == 90 and sampled == caption_stats(clips)  # seeded: the same twice
    assert abs(sampled.word_overlap - exact) < 0.03


def test_relevance_statistics_by_hand():
    r = relevance_stats([1, 1, 2, 5], n_clips=10)
    assert (r.n_queries, r.relevant_mean, r.relevant_median, r.relevant_max) == (4, 2.25, 1.5, 5)
    assert r.share_one == 0.5 and r.per_1000_clips == 225.0
    assert r.relevant_p90 == pytest.approx(2 + 0.7 * 3)  # linear interpolation at 0.9 * 3 = 2.7
    with pytest.raises(ValueError):
        relevance_stats([], 3)


def test_tiny_generated_split_relevance_against_hand_counts():
    split = build_split("evaluation", "tiny", seed=0)
    gt = ground_truth(split)
    queries = relevance_queries(gt)
    # by hand: for every distinct caption text, the clips whose facts make all of its assertions true
    by_text = {}
    for j, text in enumerate(gt["captions"]):
        by_text.setdefault(str(text), set()).update(np.flatnonzero(gt["holds"][j]).tolist())
    assert {q: len(f) for q, f in queries} == {t: len(c) for t, c in by_text.items()}
    r = relevance_stats([len(f) for _, f in queries], len(split.clips))
    assert r.relevant_mean == pytest.approx(np.mean([len(c) for c in by_text.values()]))
    assert r.relevant_mean >= 1  # a caption is always true of its own clip


def test_the_calibrated_preset_is_close_to_clotho_on_relevant_clips_per_caption():
    # the development split the style was chosen on; the test split is never used to choose
    split = build_split("development", "small", seed=0)
    mean = ground_truth(split)["holds"].sum(axis=1).mean()
    assert abs(mean - CLOTHO_REFERENCE["relevant_mean"]) < 0.5
    broad = build_split("development", "tiny", seed=0, n_clips=600)  # the original captions
    assert ground_truth(broad)["holds"].sum(axis=1).mean() > 4 * mean


def test_data_info_prints_the_statistics_beside_clothos(tmp_path, capsys):
    root = tmp_path / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(root)]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(root), "--no-audio-check"]) == 0
    out = capsys.readouterr().out
    assert "relevant clips per query (mean)" in out and "ClothoV2" in out and "3.00" in out
    assert out.count("words per caption (mean)") == 3  # one table per split
    assert "relevance_evaluation.csv: " in out and "over split evaluation" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("query,audio_filenames\na dog,not a list\n", encoding="utf-8")
    assert main(["data", "info", str(root), "--no-audio-check", "--relevance", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0]
