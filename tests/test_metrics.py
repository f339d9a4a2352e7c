"""Retrieval metrics against hand-made rankings and naive loop references."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from soundsift.metrics import (
    ap_at_k_from_ranks,
    audio_to_text_metrics,
    average_precision_at_k,
    jackknife_ci,
    map_at_k,
    metrics_from_ranks,
    text_to_audio_metrics,
    text_to_audio_metrics_from_embeddings,
    text_to_audio_ranks,
    text_to_audio_ranks_from_embeddings,
    topk_audios,
    topk_audios_from_embeddings,
    write_dcase_submission,
)


# ------------------------------------------------------------------------------- naive references
def naive_rank(column: list[float], target: int, ties: str) -> int:
    """Rank by sorting: candidates ordered by score, the target placed after (pessimistic) or before
    (optimistic) every candidate with the same score."""
    tie_key = 2 if ties == "pessimistic" else 0
    keyed = sorted(
        ((-s, tie_key if i == target else 1, i) for i, s in enumerate(column)),
    )
    return 1 + [i for _, _, i in keyed].index(target)


def naive_ap(column: list[float], relevant: list[bool], k: int, ties: str) -> float:
    """AP@k by walking down a sorted list (non-relevant first among ties when pessimistic)."""
    n_rel = sum(relevant)
    if n_rel == 0:
        return math.nan
    rel_key = 1 if ties == "pessimistic" else 0
    order = sorted(range(len(column)), key=lambda i: (-column[i], rel_key if relevant[i] else 1 - rel_key))
    hits, total = 0, 0.0
    for pos, i in enumerate(order[:k], start=1):
        if relevant[i]:
            hits += 1
            total += hits / pos
    return total / min(n_rel, k)


def random_setup(n_audio: int, per_clip: int, seed: int, decimals: int | None = None):
    gen = torch.Generator().manual_seed(seed)
    target = torch.arange(n_audio).repeat_interleave(per_clip)
    target = target[torch.randperm(target.numel(), generator=gen)]
    sim = torch.rand(n_audio, target.numel(), generator=gen, dtype=torch.float64) * 2 - 1
    if decimals is not None:  # coarse scores -> many ties
        sim = torch.round(sim * 10**decimals) / 10**decimals
    return sim, target


def column(sim: torch.Tensor, j: int) -> list[float]:
    return sim[:, j].tolist()


# ------------------------------------------------------------------------------------ hand-made
def test_hand_made_ranks_1_3_12():
    # 3 captions over 15 audios; caption 0's audio is ranked 1st, caption 1's 3rd, caption 2's 12th.
    n_audio = 15
    sim = torch.zeros(n_audio, 3)
    for j, (target, rank) in enumerate([(0, 1), (4, 3), (9, 12)]):
        scores = torch.linspace(1.0, 0.0, n_audio)  # distinct, descending
        others = [i for i in range(n_audio) if i != target]
        order = others[: rank - 1] + [target] + others[rank - 1 :]
        sim[torch.tensor(order), j] = scores
    target = torch.tensor([0, 4, 9])
    assert text_to_audio_ranks(sim, target).tolist() == [1, 3, 12]
    m = text_to_audio_metrics(sim, target)
    assert list(m) == ["mAP@10", "R@1", "R@5", "R@10"]
    assert m["mAP@10"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@5"] == pytest.approx(2 / 3)
    assert m["R@10"] == pytest.approx(2 / 3)
    assert list(text_to_audio_metrics(sim, target, ks=(2, 20))) == ["mAP@10", "R@2", "R@20"]
    assert text_to_audio_metrics(sim, target, ks=(20,))["R@20"] == 1.0


def test_ties_pessimistic_and_optimistic():
    # column 0: every audio scores the same; column 1: target tied with one other above the rest
    sim = torch.tensor([[0.5, 0.9], [0.5, 0.9], [0.5, 0.1], [0.5, 0.2]])
    target = torch.tensor([2, 0])
    assert text_to_audio_ranks(sim, target).tolist() == [4, 2]
    assert text_to_audio_ranks(sim, target, ties="optimistic").tolist() == [1, 1]
    # a collapsed model (all scores equal) gets the worst rank, not R@1 = 1
    assert text_to_audio_metrics(torch.zeros(20, 5), torch.arange(5))["R@1"] == 0.0
    with pytest.raises(ValueError, match="ties"):
        text_to_audio_ranks(sim, target, ties="average")


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("n_audio,per_clip,decimals", [(1, 3, None), (7, 5, None), (12, 2, 1), (30, 1, 2)])
def test_ranks_match_naive(ties, n_audio, per_clip, decimals):
    sim, target = random_setup(n_audio, per_clip, seed=n_audio, decimals=decimals)
    expected = [naive_rank(column(sim, j), int(target[j]), ties) for j in range(sim.shape[1])]
    assert text_to_audio_ranks(sim, target, ties=ties).tolist() == expected
    r = np.array(expected)
    m = text_to_audio_metrics(sim, target, ties=ties)
    assert m["mAP@10"] == pytest.approx(np.mean(np.where(r <= 10, 1.0 / r, 0.0)))
    for k in (1, 5, 10):
        assert m[f"R@{k}"] == pytest.approx(np.mean(r <= k))


def test_metrics_from_ranks_and_ap():
    ranks = torch.tensor([1, 2, 10, 11])
    torch.testing.assert_close(
        ap_at_k_from_ranks(ranks), torch.tensor([1, 0.5, 0.1, 0.0], dtype=torch.float64)
    )
    assert metrics_from_ranks(ranks, ks=(1, 10)) == pytest.approx(
        {"mAP@10": 1.6 / 4, "R@1": 0.25, "R@10": 0.75}
    )


def test_input_validation():
    sim = torch.rand(3, 4)
    with pytest.raises(ValueError, match="one entry per caption"):
        text_to_audio_metrics(sim, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"audio_of_caption\[2\] = 3"):
        text_to_audio_metrics(sim, torch.tensor([0, 1, 3, 2]))
    with pytest.raises(TypeError, match="integer"):
        text_to_audio_metrics(sim, torch.tensor([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        text_to_audio_metrics(torch.full((3, 4), math.nan), torch.tensor([0, 1, 2, 2]))
    with pytest.raises(ValueError, match="k must be"):
        text_to_audio_metrics(sim, torch.tensor([0, 1, 2, 2]), ks=(0,))
    with pytest.raises(ValueError, match="matrix"):
        text_to_audio_metrics(torch.rand(4), torch.tensor([0, 1, 2, 2]))


# ----------------------------------------------------------------------------- chunked embeddings
@pytest.mark.parametrize("chunk_size", [1, 7, 13, 64, 1000, None])
def test_chunked_equals_full(chunk_size):
    gen = torch.Generator().manual_seed(11)
    audio = torch.randn(37, 24, generator=gen) * 3
    captions = torch.randn(101, 24, generator=gen)
    target = torch.randint(37, (101,), generator=gen)
    full_sim = torch.nn.functional.normalize(audio, dim=1) @ torch.nn.functional.normalize(captions, dim=1).T
    full = text_to_audio_ranks(full_sim, target)
    chunked = text_to_audio_ranks_from_embeddings(audio, captions, target, chunk_size=chunk_size)
    assert torch.equal(chunked, full)
    assert text_to_audio_metrics_from_embeddings(audio, captions, target, chunk_size=chunk_size) == (
        text_to_audio_metrics(full_sim, target)
    )
    assert torch.equal(
        topk_audios_from_embeddings(audio, captions, k=10, chunk_size=chunk_size), topk_audios(full_sim, k=10)
    )


def test_chunked_inner_product_and_low_precision():
    gen = torch.Generator().manual_seed(12)
    audio, captions = torch.randn(20, 8, generator=gen), torch.randn(50, 8, generator=gen)
    target = torch.randint(20, (50,), generator=gen)
    ip = text_to_audio_ranks_from_embeddings(audio, captions, target, chunk_size=9, normalize=False)
    assert torch.equal(ip, text_to_audio_ranks(audio @ captions.T, target))
    half = text_to_audio_ranks_from_embeddings(audio.half(), captions.half(), target, chunk_size=9)
    full = text_to_audio_ranks_from_embeddings(audio.half().float(), captions.half().float(), target)
    assert torch.equal(half, full)  # float16 storage, float32 arithmetic
    with pytest.raises(ValueError, match="same D"):
        text_to_audio_ranks_from_embeddings(audio, captions[:, :4], target)
    with pytest.raises(ValueError, match="chunk_size"):
        text_to_audio_ranks_from_embeddings(audio, captions, target, chunk_size=0)


# ----------------------------------------------------------------------------------- top-k / DCASE
def test_topk_matches_sort():
    sim, _ = random_setup(15, 2, seed=13)
    idx = topk_audios(sim, k=10)
    assert idx.shape == (30, 10)
    for j in range(30):
        expected = sorted(range(15), key=lambda i: -sim[i, j].item())[:10]
        assert idx[j].tolist() == expected
    with pytest.raises(ValueError, match="k must be"):
        topk_audios(sim, k=16)


def test_write_dcase_submission(tmp_path):
    captions = ['a dog barks, then "stops"', "rain on a tin roof", "ünïcode birds"]
    names = ["dog 1.wav", "rain, heavy.wav", "birds'.wav", "x.wav"]
    idx = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1]])
    out = write_dcase_submission(tmp_path / "sub" / "submission.csv", captions, names, idx)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["caption", "file_name_1", "file_name_2", "file_name_3", "file_name_4"]
    assert rows[1] == [captions[0], "dog 1.wav", "rain, heavy.wav", "birds'.wav", "x.wav"]
    assert rows[3] == [captions[2], "birds'.wav", "x.wav", "dog 1.wav", "rain, heavy.wav"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]  # no temp file left
    with pytest.raises(ValueError, match="row 1 of topk_indices"):
        write_dcase_submission(tmp_path / "bad.csv", captions, names, [[0, 1], [4, 0], [1, 2]])
    with pytest.raises(ValueError, match="n_captions=3"):
        write_dcase_submission(tmp_path / "bad.csv", captions, names, idx[:2])
    assert not (tmp_path / "bad.csv").exists()


# ---------------------------------------------------------------------------------- audio to text
def test_audio_to_text_hand_made():
    # 2 audios, 4 captions: captions 0, 1 belong to audio 0; 2, 3 to audio 1.
    sim = torch.tensor([[0.1, 0.8, 0.9, 0.7], [0.9, 0.8, 0.1, 0.2]])
    target = torch.tensor([0, 0, 1, 1])
    m = audio_to_text_metrics(sim, target, ks=(1, 2, 3))
    # audio 0: order 2, 1, 3, 0 -> first own caption (1) at rank 2; AP@10 = (1/2 + 2/4) / 2 = 0.5
    # audio 1: order 0, 1, 3, 2 -> first own caption (3) at rank 3; AP@10 = (1/3 + 2/4) / 2
    assert m["R@1"] == 0.0 and m["R@2"] == 0.5 and m["R@3"] == 1.0
    assert m["mAP@10"] == pytest.approx((0.5 + (1 / 3 + 0.5) / 2) / 2)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("decimals", [None, 1])
def test_audio_to_text_matches_naive(ties, decimals):
    sim, target = random_setup(9, 3, seed=14, decimals=decimals)
    sim = torch.cat([sim, torch.rand(1, sim.shape[1], dtype=torch.float64)])  # audio 9 has no caption
    first_hits, aps = [], []
    for i in range(9):
        row = sim[i].tolist()
        relevant = [int(t) == i for t in target]
        aps.append(naive_ap(row, relevant, 10, ties))
        best = max(r for r, rel in zip(row, relevant) if rel)
        if ties == "pessimistic":
            first_hits.append(1 + sum(1 for r, rel in zip(row, relevant) if not rel and r >= best))
        else:
            first_hits.append(1 + sum(1 for r in row if r > best))
    m = audio_to_text_metrics(sim, target, ties=ties)
    assert m["mAP@10"] == pytest.approx(np.mean(aps))
    for k in (1, 5, 10):
        assert m[f"R@{k}"] == pytest.approx(np.mean(np.array(first_hits) <= k))


# ------------------------------------------------------------------------------- multi-relevance
def test_map_at_k_hand_made():
    # one caption, 5 audios; relevant audios at ranks 1 and 3 -> AP@16 = (1/1 + 2/3) / 2
    sim = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.5]])
    rel = torch.tensor([[True], [False], [True], [False], [False]])
    assert map_at_k(sim, rel, k=16) == pytest.approx((1 + 2 / 3) / 2)
    # k = 2: only the first is inside; divided by min(2, 2)
    assert map_at_k(sim, rel, k=2) == pytest.approx(0.5)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("k,decimals", [(16, None), (3, None), (10, 1), (40, 1)])
def test_map_at_k_matches_naive(ties, k, decimals):
    gen = torch.Generator().manual_seed(k)
    sim = torch.rand(25, 30, generator=gen, dtype=torch.float64)
    if decimals is not None:
        sim = torch.round(sim * 10) / 10
    rel = torch.rand(25, 30, generator=gen) < 0.15
    rel[:, 0] = False  # a caption without relevant audio: excluded
    per_query = average_precision_at_k(sim, rel, k=k, ties=ties)
    expected = [naive_ap(column(sim, j), rel[:, j].tolist(), k, ties) for j in range(30)]
    assert math.isnan(per_query[0].item()) and math.isnan(expected[0])
    np.testing.assert_allclose(per_query[1:].numpy(), expected[1:], rtol=1e-12)
    assert map_at_k(sim, rel, k=k, ties=ties) == pytest.approx(np.nanmean(expected))


def test_map_at_k_single_relevance_equals_text_to_audio_map():
    sim, target = random_setup(40, 5, seed=15, decimals=1)
    rel = torch.zeros_like(sim, dtype=torch.bool)
    rel[target, torch.arange(sim.shape[1])] = True
    for ties in ("pessimistic", "optimistic"):
        assert map_at_k(sim, rel, k=10, ties=ties) == pytest.approx(
            text_to_audio_metrics(sim, target, ties=ties)["mAP@10"]
        )


def test_map_at_k_errors():
    with pytest.raises(ValueError, match="no caption has a relevant audio"):
        map_at_k(torch.rand(3, 2), torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="relevance has shape"):
        map_at_k(torch.rand(3, 2), torch.zeros(2, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------- jackknife
def test_jackknife_se_equals_std_over_sqrt_n():
    rng = np.random.default_rng(16)
    x = rng.random(57)
    mean, low, high = jackknife_ci(x)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert mean == pytest.approx(x.mean())
    assert (high - low) / 2 == pytest.approx(1.959963984540054 * se, rel=1e-10)
    assert mean - low == pytest.approx(high - mean)
    # naive jackknife with an explicit leave-one-out loop
    loo = [np.delete(x, i).mean() for i in range(x.size)]
    se_naive = math.sqrt((x.size - 1) / x.size * sum((v - np.mean(loo)) ** 2 for v in loo))
    assert se_naive == pytest.approx(se, rel=1e-10)
    _, low90, high90 = jackknife_ci(torch.tensor(x), alpha=0.1)
    assert high90 - low90 < high - low


def test_jackknife_errors():
    with pytest.raises(ValueError, match="at least 2"):
        jackknife_ci([0.5])
    with pytest.raises(ValueError, match="NaN"):
        jackknife_ci([0.5, math.nan])
    with pytest.raises(ValueError, match="alpha"):
        jackknife_ci([0.5, 0.2], alpha=1.5)
    assert jackknife_ci([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))
