"""Moment-retrieval metrics against lighthouse's own evaluation (fixtures), a naive reference, and hand cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soundsift.metrics.moments import detection_ap, moment_retrieval_metrics, temporal_iou

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "moments").glob("case*.json"))


def _inputs(case: dict) -> tuple[list, list]:
    preds = {p["qid"]: p["pred_relevant_windows"] for p in case["predictions"]}
    return [g["relevant_windows"] for g in case["ground_truth"]], [preds[g["qid"]] for g in case["ground_truth"]]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_matches_lighthouse_standalone_eval(path: Path) -> None:
    case = json.loads(path.read_text())
    ours = moment_retrieval_metrics(*_inputs(case))
    theirs = case["lighthouse"]
    assert ours["mAP_by_iou"] == {k: v for k, v in theirs["MR-mAP"].items() if k != "average"}
    assert ours["R1_by_iou"] == theirs["MR-R1"]
    brief = theirs["brief"]
    assert (ours["R1@0.5"], ours["R1@0.7"]) == (brief["MR-full-R1@0.5"], brief["MR-full-R1@0.7"])
    assert (ours["mAP@0.5"], ours["mAP@0.75"], ours["mAP"]) == (
        brief["MR-full-mAP@0.5"], brief["MR-full-mAP@0.75"], brief["MR-full-mAP"])
    unrounded = moment_retrieval_metrics(*_inputs(case), rounded=False)
    assert abs(unrounded["mAP"] - brief["MR-full-mAP"]) <= 0.005 + 1e-9


def test_fixtures_exercise_truncation_and_the_length_filter() -> None:
    cases = [json.loads(p.read_text()) for p in FIXTURES]
    assert len(cases) >= 4
    assert any(len(p["pred_relevant_windows"]) > 10 for c in cases for p in c["predictions"])
    assert any(w[0] == w[1] for c in cases for g in c["ground_truth"] for w in g["relevant_windows"])


# --- naive reference, written from the definitions -------------------------------------------------

def naive_iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def naive_ap(gt, pred, t) -> float:
    ranked = sorted(enumerate(pred), key=lambda iw: (-iw[1][2], iw[0]))
    claimed, hits = set(), []
    for _, w in ranked:
        free = [(naive_iou(w, g), j) for j, g in enumerate(gt) if j not in claimed]
        best = max(free, default=(-1.0, -1))
        hit = best[0] >= t
        if hit:
            claimed.add(best[1])
        hits.append(hit)
    precision = [sum(hits[: k + 1]) / (k + 1) for k in range(len(hits))]
    # each hit adds 1/M recall, weighted by the best precision at that rank or later
    return sum(max(precision[k:]) for k in range(len(hits)) if hits[k]) / len(gt)


def test_against_naive_reference_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        gts, preds = [], []
        for _ in range(rng.integers(1, 8)):
            gt = np.sort(rng.uniform(0, 60, (rng.integers(1, 5), 2)), axis=1)
            pred = np.sort(rng.uniform(0, 60, (rng.integers(1, 14), 2)), axis=1)
            pred = np.c_[pred, rng.random(len(pred))]
            gts.append(gt)
            preds.append(pred)
        ours = moment_retrieval_metrics(gts, preds, rounded=False)
        for t in (0.5, 0.75, 0.95):
            expect = 100 * np.mean([naive_ap(g.tolist(), p[:10].tolist(), t) for g, p in zip(gts, preds)])
            assert ours["mAP_by_iou"][str(t)] == pytest.approx(expect, abs=1e-9)
        for t in (0.5, 0.7):
            first = [max(naive_iou(p[0], w) for w in g) for g, p in zip(gts, preds)]
            assert ours[f"R1@{t}"] == pytest.approx(100 * np.mean(np.array(first) >= t), abs=1e-9)


# --- hand cases -------------------------------------------------------------------------------------

def test_iou_by_hand() -> None:
    assert temporal_iou([[0, 10]], [[5, 15], [0, 5], [20, 30]]).tolist() == [[5 / 15, 0.5, 0.0]]


def test_iou_exactly_at_the_threshold_counts() -> None:
    # [0, 10] against [0, 5]: IoU 0.5 exactly; [0, 7] against [0, 10]: 0.7 exactly
    m = moment_retrieval_metrics([[[0, 5]], [[0, 10]]], [[[0, 10, 1.0]], [[0, 7, 1.0]]])
    assert m["R1@0.5"] == 100.0 and m["R1@0.7"] == 50.0
    assert m["mAP@0.5"] == 100.0 and m["mAP@0.75"] == 0.0


def test_several_ground_truth_windows() -> None:
    # two true windows; ranked: a hit on the second, a miss, a hit on the first
    gt = [[0, 10], [20, 30]]
    pred = [[20, 30, 0.9], [40, 50, 0.8], [0, 10, 0.7]]
    assert detection_ap(gt, pred, [0.5])[0] == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    # R1 compares the first listed window with the true window it overlaps best
    m = moment_retrieval_metrics([gt], [pred])
    assert m["R1@0.7"] == 100.0


def test_first_listed_window_is_top1_not_best_score() -> None:
    m = moment_retrieval_metrics([[[0, 10]]], [[[50, 60, 0.1], [0, 10, 0.9]]])
    assert m["R1@0.5"] == 0.0 and m["mAP@0.5"] == 100.0


def test_duplicate_predictions_are_false_positives() -> None:
    ap = detection_ap([[0, 10]], [[0, 10, 0.9], [0, 10, 0.9], [0, 10, 0.5]], [0.5])
    assert ap[0] == 1.0  # the hit comes first: duplicates after it cost nothing under VOC interpolation
    ap = detection_ap([[0, 10]], [[30, 40, 0.9], [0, 10, 0.8], [0, 10, 0.8]], [0.5])
    assert ap[0] == 0.5


def test_tied_scores_keep_listed_order_and_only_ten_count() -> None:
    miss, hit = [40, 50, 0.5], [0, 10, 0.5]
    assert detection_ap([[0, 10]], [miss, hit], [0.5])[0] == 0.5
    assert detection_ap([[0, 10]], [hit, miss], [0.5])[0] == 1.0
    m = moment_retrieval_metrics([[[0, 10]]], [[miss] * 10 + [[0, 10, 1.0]]])
    assert m["mAP"] == 0.0  # the 11th window is never read


def test_query_without_prediction_scores_zero() -> None:
    m = moment_retrieval_metrics([[[0, 10]], [[0, 10]]], [[[0, 10, 1.0]], None])
    assert (m["R1@0.5"], m["mAP"], m["n_without_prediction"]) == (50.0, 50.0, 1)
    m = moment_retrieval_metrics([[[0, 10]], [[0, 10]]], [[[0, 10, 1.0]], []])
    assert m["mAP"] == 50.0


def test_zero_length_ground_truth_leaves_the_query_out() -> None:
    m = moment_retrieval_metrics([[[5, 5]], [[0, 10]]], [[[0, 1, 1.0]], [[0, 10, 1.0]]])
    assert (m["n_queries"], m["R1@0.5"]) == (1, 100.0)
    with pytest.raises(ValueError, match="no query"):
        moment_retrieval_metrics([[[5, 5]]], [[[0, 1, 1.0]]])


def test_rounding_is_to_hundredths_of_a_percent() -> None:
    m = moment_retrieval_metrics([[[0, 10]]] * 3, [[[0, 10, 1.0]], [[50, 60, 1]], [[50, 60, 1]]])
    assert m["R1@0.5"] == 33.33
    assert moment_retrieval_metrics([[[0, 10]]] * 3, [[[0, 10, 1.0]], [[50, 60, 1]], [[50, 60, 1]]],
                                    rounded=False)["R1@0.5"] == pytest.approx(100 / 3)
