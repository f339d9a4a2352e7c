"""The learned moment model (issue 17 item 5): it trains in seconds with a falling loss, finds the right
span of a trivially separable sequence, round-trips through save/load, caches window embeddings, and runs
end to end through ``train-moments`` and ``evaluate --task moments --baseline learned`` on the tiny preset
(a tiny random model: plumbing, not quality)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import SoundsiftError  # noqa: E402
from soundsift.training.moment_features import SplitFeatures, load_features, save_features  # noqa: E402
from soundsift.training.moment_model import (  # noqa: E402
    MomentTrainOptions,
    decode,
    load_moment_model,
    predict_windows,
    save_moment_model,
    train_moment_model,
)
from test_index import make_model  # noqa: E402

DIM = 8


def separable(n_recordings: int = 12, steps: int = 30, seed: int = 0):
    """Recordings of 1-s windows every 1 s; each holds one event of 4-9 steps whose windows point along the
    query's direction (one of DIM axes), the rest along noise: trivially separable."""
    rng = np.random.default_rng(seed)
    windows, spans, owner, queries, truth = [], [], [], [], []
    for r in range(n_recordings):
        axis = int(rng.integers(DIM))
        w = rng.normal(0, 0.1, (steps, DIM)).astype(np.float32)
        length = int(rng.integers(4, 10))
        start = int(rng.integers(0, steps - length))
        w[start: start + length, axis] += 1.0
        windows.append(w / np.linalg.norm(w, axis=1, keepdims=True))
        spans.append(np.stack([np.arange(steps), np.arange(steps) + 1.0], 1))
        q = np.zeros(DIM, np.float32)
        q[axis] = 1.0
        queries.append(q)
        owner.append(r)
        truth.append([(float(start), float(start + length))])
    features = SplitFeatures(tuple(windows), tuple(spans), np.stack(queries), np.asarray(owner, np.int64))
    return features, truth


def test_trains_in_seconds_and_the_loss_falls():
    features, truth = separable()
    log: list[float] = []
    train_moment_model(features, truth, MomentTrainOptions(hidden=16, steps=60, distill_weight=0), batch_size=8,
                       log=log)
    assert len(log) == 60 and np.mean(log[-10:]) < 0.5 * np.mean(log[:5])


def test_finds_the_right_span_of_a_separable_sequence():
    features, truth = separable(24)
    head = train_moment_model(features, truth, MomentTrainOptions(hidden=32, steps=300, distill_weight=0),
                              batch_size=16)
    test, test_truth = separable(6, seed=1)
    predicted = predict_windows(head, test, [30.0] * 6)
    for windows, ((start, end),) in zip(predicted, test_truth):
        a, b, _ = windows[0]
        iou = max(0.0, min(b, end) - max(a, start)) / (max(b, end) - min(a, start))
        assert iou >= 0.7, (windows[0], (start, end))


def test_decode_ranks_by_score_and_suppresses_overlaps():
    scores = np.array([0.1, 0.9, 0.8, 0.2])
    offsets = np.array([[0.5, 0.5], [1.5, 1.5], [2.5, 0.5], [0.5, 0.5]])
    centres = np.array([0.5, 1.5, 2.5, 3.5])
    out = decode(scores, offsets, centres, hop=1.0, duration=4.0)
    # step 1: [0, 3] (clipped at 0); step 2's [0, 3] duplicates it and is dropped; [0, 1] overlaps it by 1/3
    assert out == [[0.0, 3.0, 0.9], [3.0, 4.0, 0.2], [0.0, 1.0, 0.1]]


def test_save_load_round_trip(tmp_path):
    features, truth = separable(4)
    head = train_moment_model(features, truth, MomentTrainOptions(hidden=8, steps=3), batch_size=4)
    path = save_moment_model(tmp_path / "m.pt", head, "zero-shot", 2.0, 1.0)
    loaded = load_moment_model(path)
    assert (loaded.model, loaded.window, loaded.hop) == ("zero-shot", 2.0, 1.0)
    assert predict_windows(loaded.head, features, [30.0] * 4) == predict_windows(head, features, [30.0] * 4)
    torch.save({"not": "a moment model"}, tmp_path / "bad.pt")
    with pytest.raises(SoundsiftError, match="not a soundsift moment model"):
        load_moment_model(tmp_path / "bad.pt")


def test_features_cache_round_trip(tmp_path):
    features, _ = separable(3)
    again = load_features(save_features(tmp_path / "f.npz", features))
    assert len(again.windows) == 3 and np.array_equal(again.queries, features.queries)
    assert all(np.array_equal(a, b) for a, b in zip(again.spans, features.spans))


def test_cli_end_to_end_on_the_tiny_preset(tmp_path, capsys):
    bench = tmp_path / "bench"
    assert main(["-q", "synth", "--moments", "--preset", "tiny", "--seed", "3", "--out", str(bench)]) == 0
    model = str(make_model(tmp_path / "m.pt"))
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["-q", "train-moments", "--data-root", str(bench), "--model", model, "--out", str(run),
                 "--steps", "5", "--hidden", "8"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{"):])
    assert (run / "moment_model.pt").is_file() and result["eval"]["split"] == "evaluation"
    assert 0 <= result["eval"]["R1@0.5"] <= 100 and result["eval"]["n_without_prediction"] == 0
    assert len(list((bench / "moment_features").glob("*.npz"))) == 2  # train and test embeddings cached
    out = tmp_path / "pred.jsonl"
    assert main(["-q", "evaluate", "--task", "moments", "--data-root", str(bench),  # learned: the default
                 "--split", "test", "--moment-model", str(run / "moment_model.pt"), "--out", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["baseline"] == "learned" and again["R1@0.5"] == result["eval"]["R1@0.5"]
    for line in map(json.loads, out.read_text().splitlines()):
        windows = line["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10 and all(0 <= w[0] < w[1] <= 20.0 for w in windows)
    assert main(["-q", "evaluate", "--task", "moments", "--baseline", "learned", "--data-root", str(bench)]) == 2
