"""Estimated correspondences as soft targets for the learned moment model: the targets (mean of the
teachers' query-window cosines, softmax over the windows at tau) and the distillation loss against naive
references written here, hand-worked cases, and training with them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import AlignmentError, ConfigError  # noqa: E402
from soundsift.losses import window_distillation_loss  # noqa: E402
from soundsift.training.moment_features import SplitFeatures  # noqa: E402
from soundsift.training.moment_model import MomentTrainOptions, train_moment_model  # noqa: E402
from soundsift.training.moment_targets import window_soft_targets  # noqa: E402
from test_index import make_model  # noqa: E402
from test_moment_model import separable  # noqa: E402


def random_features(rng, lengths, queries_per, dim):
    windows = tuple(rng.normal(size=(n, dim)).astype(np.float32) for n in lengths)
    spans = tuple(np.stack([np.arange(n), np.arange(n) + 2.0], 1) for n in lengths)
    owner = np.repeat(np.arange(len(lengths)), queries_per)
    queries = rng.normal(size=(len(owner), dim)).astype(np.float32)
    return SplitFeatures(windows, spans, queries, owner.astype(np.int64))


def naive_targets(teachers, tau):
    first = teachers[0]
    longest = max(len(w) for w in first.windows)
    out = np.zeros((len(first.queries), longest))
    for i, r in enumerate(first.query_recording):
        n = len(first.windows[r])
        sims = []
        for t in range(n):
            total = 0.0
            for m in teachers:
                w, q = m.windows[r][t].astype(np.float64), m.queries[i].astype(np.float64)
                total += float(w @ q) / (math.sqrt(float(w @ w)) * math.sqrt(float(q @ q)))
            sims.append(total / len(teachers))
        e = [math.exp(s / tau) for s in sims]
        out[i, :n] = [x / sum(e) for x in e]
    return out


def test_targets_match_a_naive_reference_on_random_teachers():
    rng = np.random.default_rng(0)
    a = random_features(rng, [5, 3, 7], 2, 6)
    b = random_features(rng, [5, 3, 7], 2, 4)  # another teacher, another embedding size, same windows
    b = SplitFeatures(b.windows, a.spans, b.queries, a.query_recording)
    for teachers, tau in (([a], 0.05), ([a, b], 0.05), ([a, b], 0.7)):
        got = window_soft_targets(teachers, tau).numpy()
        assert np.allclose(got, naive_targets(teachers, tau), atol=1e-5)
        assert np.allclose(got.sum(1), 1.0, atol=1e-5)
        assert (got[2:4, 3:] == 0).all()  # the 3-window recording's queries: nothing on padding


def test_targets_hand_worked():
    # one recording of two windows, one query: cosines 1 and 0; tau 0.5 -> softmax(2, 0)
    f = SplitFeatures((np.array([[1.0, 0.0], [0.0, 3.0]], np.float32),), (np.array([[0, 2], [1, 3.0]]),),
                      np.array([[2.0, 0.0]], np.float32), np.array([0]))
    e = math.exp(2.0)
    assert np.allclose(window_soft_targets([f], 0.5).numpy(), [[e / (e + 1), 1 / (e + 1)]], atol=1e-6)
    # a second teacher with cosines 0 and 1: the mean is 0.5 for both windows -> uniform
    g = SplitFeatures((np.array([[0.0, 1.0], [1.0, 0.0]], np.float32),), f.spans, f.queries, f.query_recording)
    assert np.allclose(window_soft_targets([f, g], 0.5).numpy(), [[0.5, 0.5]], atol=1e-6)


def test_misaligned_teachers_are_refused():
    rng = np.random.default_rng(1)
    a = random_features(rng, [4, 4], 1, 3)
    other = random_features(rng, [4, 5], 1, 3)
    with pytest.raises(AlignmentError, match="recording 1's windows differ"):
        window_soft_targets([a, other], 0.05)
    fewer = random_features(rng, [4], 1, 3)
    with pytest.raises(AlignmentError, match="other recordings or queries"):
        window_soft_targets([a, fewer], 0.05)


def naive_loss(logits, targets, mask):
    rows = []
    for z, p, m in zip(logits.tolist(), targets.tolist(), mask.tolist()):
        valid = [t for t in range(len(z)) if m[t] > 0]
        log_norm = math.log(sum(math.exp(z[t]) for t in valid))
        rows.append(-sum(p[t] * (z[t] - log_norm) for t in valid))
    return sum(rows) / len(rows)


def test_distillation_loss_matches_a_naive_reference():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=gen) * 3
    mask = torch.ones(5, 7)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    targets = torch.rand(5, 7, generator=gen) * mask
    targets = targets / targets.sum(1, keepdim=True)
    got = float(window_distillation_loss(logits, targets, mask))
    assert got == pytest.approx(naive_loss(logits, targets, mask), rel=1e-5)
    # padding logits do not matter, whatever their value
    assert float(window_distillation_loss(logits.masked_fill(mask == 0, 1e4), targets, mask)) == pytest.approx(got, rel=1e-5)
    # hand case: equal logits over two steps, all mass on one: log 2
    assert float(window_distillation_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.ones(1, 2))) == \
        pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="no valid step"):
        window_distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2))


def test_the_gradient_flows_to_the_logits_not_the_targets():
    logits = torch.zeros(1, 3, requires_grad=True)
    targets = torch.tensor([[0.2, 0.3, 0.5]], requires_grad=True)
    window_distillation_loss(logits, targets, torch.ones(1, 3)).backward()
    # d/dz of -sum p log softmax(z) = softmax(z) - p
    assert torch.allclose(logits.grad, torch.full((1, 3), 1 / 3) - targets.detach(), atol=1e-6)
    assert targets.grad is None


def test_options_are_checked():
    with pytest.raises(ConfigError, match="one > 0"):
        MomentTrainOptions(loss_weight=0, distill_weight=0)
    with pytest.raises(ConfigError, match="must be >= 0"):
        MomentTrainOptions(distill_weight=-1)
    with pytest.raises(ConfigError, match="tau"):
        MomentTrainOptions(tau=0)


def test_trains_with_soft_targets_alone_and_mixed():
    features, truth = separable(6, steps=20)
    for lw, dw in ((1.0, 1.0), (0.0, 1.0)):
        log: list[float] = []
        train_moment_model(features, truth, MomentTrainOptions(hidden=8, steps=30, loss_weight=lw, distill_weight=dw),
                           batch_size=6, log=log)
        assert np.mean(log[-10:]) < np.mean(log[:5])
    rng = np.random.default_rng(3)
    bad = random_features(rng, [len(w) + 1 for w in features.windows], 1, 8)
    with pytest.raises(AlignmentError):
        train_moment_model(features, truth, MomentTrainOptions(hidden=8, steps=1, distill_weight=1.0), teachers=[bad])


def test_cli_trains_with_soft_targets_from_a_teacher(tmp_path, capsys):
    bench = tmp_path / "bench"
    assert main(["-q", "synth", "--moments", "--preset", "tiny", "--seed", "2", "--out", str(bench)]) == 0
    model = str(make_model(tmp_path / "m.pt"))
    teacher = str(make_model(tmp_path / "t.pt", seed=1))
    capsys.readouterr()
    assert main(["-q", "train-moments", "--data-root", str(bench), "--model", model, "--out", str(tmp_path / "run"),
                 "--steps", "3", "--hidden", "8", "--distill-weight", "0.5", "--teacher", teacher, "--no-eval"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["teachers"] == [teacher] and result["options"]["distill_weight"] == 0.5
    assert result["options"]["tau"] == 0.05
