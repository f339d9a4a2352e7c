"""A run's multi-relevance test metrics (data.relevance), the demo's pooled paired gains and the
results table's mAP@16 columns, against naive references."""

import numpy as np
import pytest
import torch

from soundsift.data.relevance import write_relevance
from soundsift.errors import ComparisonError, ConfigError, DatasetError
from soundsift.training.compare import PerQuery, paired, per_query_doc
from soundsift.training.demo_gains import pooled_gain
from soundsift.training.multi_eval import multi_relevance_of_split, relevance_path
from soundsift.training.results import results_table
from soundsift.training.tables import to_markdown


def naive_ap(scores, relevant, k=16):
    """DCASE 2025 baseline's AP: sorted 0-based ranks r_i of the relevant clips, sum of i / (r_i + 1)
    over r_i < k, divided by the number of relevant clips (ties: relevant ranked last)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i in relevant))
    ranks = sorted(order.index(i) for i in relevant)
    return sum(i / (r + 1) for i, r in enumerate(ranks, start=1) if r < k) / len(ranks)


def test_per_caption_ap16_matches_the_baselines_formula(tmp_path):
    rng = np.random.default_rng(0)
    clips = [f"clip {i}.wav" for i in range(30)]
    captions = [f"caption {j}" for j in range(40)]
    sim = torch.from_numpy(rng.normal(size=(30, 40)).astype(np.float32))
    relevant = {j: sorted(rng.choice(30, size=rng.integers(1, 6), replace=False).tolist()) for j in range(0, 40, 2)}
    path = write_relevance(tmp_path / "rel.csv", [(captions[j], [clips[i] for i in r]) for j, r in relevant.items()])
    metrics, ap16 = multi_relevance_of_split(path, clips, captions, sim)
    for j in range(40):
        if j in relevant:
            assert ap16[j] == pytest.approx(naive_ap(sim[:, j].tolist(), set(relevant[j])))
        else:
            assert ap16[j] is None  # not a query of the file
    assert metrics["mAP@16"] == pytest.approx(np.mean([a for a in ap16 if a is not None]))
    assert metrics["n_queries"] == 20 and metrics["left_out"] == 0
    # by hand: relevant clips at 0-based ranks 0 and 2 -> (1/1 + 2/3) / 2
    hand = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    path = write_relevance(tmp_path / "hand.csv", [("q", ["a", "c"])])
    _, ap = multi_relevance_of_split(path, ["a", "b", "c", "d"], ["q"], hand)
    assert ap == [pytest.approx((1 + 2 / 3) / 2)]
    with pytest.raises(DatasetError, match="none of its 1 queries"):
        multi_relevance_of_split(path, ["a", "b", "c", "d"], ["other"], hand)


def test_relevance_paths_are_relative_to_the_data_root(tmp_path):
    assert relevance_path("rel.csv", str(tmp_path)) == tmp_path / "rel.csv"
    assert relevance_path(str(tmp_path / "x.csv"), "/elsewhere") == tmp_path / "x.csv"


def per_query(ap10, ap16, clips):
    return PerQuery("src", "evaluation", list(clips), [f"c{i}" for i in range(len(clips))],
                    np.ones(len(clips), dtype=int), np.asarray(ap10, float), "d", np.asarray(ap16, float))


def test_pooled_gain_pairs_queries_within_seeds_and_resamples_seed_clip_units():
    rng = np.random.default_rng(3)
    clips = np.repeat([f"clip{i}" for i in range(40)], 5)
    a = [per_query(rng.random(200), rng.random(200), clips) for _ in range(2)]
    b = [per_query(x.ap + 0.05 + 0.1 * rng.normal(size=200), x.ap16 + 0.02, clips) for x in a]
    diff, low, high = pooled_gain(a, b, "mAP@10")
    naive = np.mean(np.concatenate([y.ap - x.ap for x, y in zip(a, b)]))
    assert diff == pytest.approx(100 * naive, abs=0.006) and low < diff < high
    assert pooled_gain(a, b, "mAP@16")[0] == pytest.approx(2.0, abs=0.006)
    # the same seed twice: the same gain, but twice the (seed, clip) units, so a narrower interval
    one = pooled_gain(a[:1], b[:1], "mAP@10")
    twice = pooled_gain([a[0], a[0]], [b[0], b[0]], "mAP@10")
    assert twice[0] == pytest.approx(one[0], abs=0.006)
    assert (twice[2] - twice[1]) < 0.85 * (one[2] - one[1])
    # a caption that is no query (NaN AP@16) drops out of the mAP@16 pairs only
    b16 = per_query(b[0].ap, np.where(np.arange(200) < 100, np.nan, b[0].ap16), clips)
    assert pooled_gain(a[:1], [b16], "mAP@16")[0] == pytest.approx(
        100 * np.mean(b[0].ap16[100:] - a[0].ap16[100:]), abs=0.006)


def test_paired_refuses_runs_without_ap16():
    clips = ["x", "y"]
    plain = PerQuery("old", "evaluation", clips, ["c0", "c1"], np.ones(2, int), np.ones(2), "d")
    with pytest.raises(ComparisonError, match="no AP@16"):
        paired(plain, per_query([1, 1], [1, 1], clips), "mAP@16")


def test_per_query_documents_keep_ap16():
    doc = per_query_doc("evaluation", ["a", "b"], ["x", "y"], torch.tensor([0, 1]), [1, 3], [0.5, None])
    assert [q["AP@16"] for q in doc["queries"]] == [0.5, None]
    assert "AP@16" not in per_query_doc("evaluation", ["a"], ["x"], torch.tensor([0]), [1])["queries"][0]


def test_results_table_shows_mAP16_beside_the_baselines():
    rows = [{"step": "clotho", "mAP@16": 33.0, "mAP@10": 28.0, "R@1": 17.0, "R@5": 42.0, "R@10": 56.0,
             "baseline": {"mAP@16": 32.82, "mAP@10": 27.83}, "baseline_diff": {"mAP@16": 0.18, "mAP@10": 0.17}}]
    md = to_markdown(results_table(rows))
    head = md.splitlines()[0]
    assert "| mAP@16 | mAP@10 |" in head and "baseline mAP@16 | diff | baseline mAP@10 | diff" in head
    assert "| clotho | 33.00 | 28.00 |" in md and "+0.18" in md
    assert "mAP@16" not in to_markdown(results_table([{"step": "s", "mAP@10": 1.0}]))


def test_the_wavcaps_exclusion_list_of_a_config_reaches_the_reader(tmp_path):
    from soundsift.config import ExtraTrain
    from soundsift.training.run import _reader_options

    extra = ExtraTrain.model_validate({"format": "wavcaps", "root": str(tmp_path), "exclude_ids": "x.csv"})
    assert _reader_options(extra) == {"exclude_ids_csv": tmp_path / "x.csv"}
    assert _reader_options(ExtraTrain.model_validate({"format": "wavcaps", "root": str(tmp_path)})) == {}
    with pytest.raises(ConfigError, match="wavcaps only"):
        _reader_options(ExtraTrain.model_validate({"format": "audiocaps", "root": "r", "exclude_ids": "x.csv"}))
