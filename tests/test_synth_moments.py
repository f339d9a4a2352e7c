"""``synth --moments`` (long recordings with generated clips at known times) and the moment baselines of
``evaluate --task moments`` (a sliding window over a model, random windows) end to end on the tiny preset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.audio import load_audio  # noqa: E402
from soundsift.cli.main import main  # noqa: E402
from soundsift.data.readers.moments import read_moment_annotations  # noqa: E402
from soundsift.data.synth.moments import annotation_file, generate_moments, render_recording  # noqa: E402
from soundsift.training.evaluate_moments import evaluate_moments  # noqa: E402
from soundsift.training.moment_baseline import rank_windows, write_predictions  # noqa: E402
from test_index import make_model  # noqa: E402

RATE = 16000


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("moments")
    assert main(["-q", "synth", "--moments", "--preset", "tiny", "--seed", "3", "--out", str(root)]) == 0
    return root


def test_annotated_windows_hold_the_events(bench):
    for split in ("train", "val", "test"):
        recordings = read_moment_annotations(annotation_file(bench, split))
        assert recordings and all(1 <= len(r.queries) <= 3 and r.duration == 20.0 for r in recordings)
        folder = bench / {"train": "development", "val": "validation", "test": "evaluation"}[split]
        for rec in recordings:
            wave = load_audio(folder / f"{rec.vid}.wav", RATE).astype(np.float64)
            inside = np.zeros(len(wave), bool)
            for q in rec.queries:
                (start, end), = q.windows
                assert 0 <= start < end <= rec.duration and q.query
                inside[int(round(start * RATE)): int(round(end * RATE))] = True
            # the overlaid clips sit >= 3 dB over the background: inside the windows is louder than outside
            assert np.mean(wave[inside] ** 2) > 1.5 * np.mean(wave[~inside] ** 2)


def test_boundaries_are_whole_milliseconds_without_overlap():
    wave, events = render_recording("tiny", 3, "evaluation", 0, RATE)
    _, bare = render_recording("tiny", 3, "evaluation", 0, RATE)
    assert [(e.start, e.end) for e in events] == [(e.start, e.end) for e in bare]
    for e in events:  # whole milliseconds (exact seconds), at least the preset's shortest event
        assert e.end - e.start >= 2 * RATE and (e.start * 1000) % RATE == 0
    assert all(a.end <= b.start for a, b in zip(events, events[1:]))  # no overlap


def test_deterministic_per_seed(bench, tmp_path):
    again = generate_moments(tmp_path / "again", "tiny", seed=3, progress=False)
    other = generate_moments(tmp_path / "other", "tiny", seed=4, progress=False)
    for name in ("clotho_moment_test_release.jsonl", "evaluation/moment_test_00000.wav"):
        assert (bench / name).read_bytes() == (again / name).read_bytes()
        assert (bench / name).read_bytes() != (other / name).read_bytes()


def test_true_windows_score_100_and_rank_windows():
    spans = np.array([[0, 5], [2.5, 7.5], [5, 10], [7.5, 12.5], [10, 15]])
    ranked = rank_windows(spans, np.array([0.1, 0.9, 0.85, 0.2, 0.5]))
    assert ranked[0] == [2.5, 10.0, 0.9]  # the two windows within 10 % of the best merge
    assert len(ranked) <= 10 and all(a[2] >= b[2] for a, b in zip(ranked, ranked[1:]))


def test_true_windows_give_r1_100(bench, tmp_path):
    gt = annotation_file(bench, "test")
    rows = [json.loads(line) for line in gt.read_text().splitlines()]
    preds = [{"qid": r["qid"], "query": r["query"], "vid": r["vid"],
              "pred_relevant_windows": [[*r["relevant_windows"][0], 1.0]]} for r in rows]
    result = evaluate_moments(write_predictions(tmp_path / "p.jsonl", preds), gt)
    assert result["R1@0.5"] == result["R1@0.7"] == result["mAP"] == 100.0


@pytest.mark.parametrize("baseline", ["window", "random"])
def test_baseline_end_to_end(bench, tmp_path, capsys, baseline):
    out = tmp_path / "pred.jsonl"
    argv = ["-q", "evaluate", "--task", "moments", "--data-root", str(bench), "--split", "test",
            "--window", "4", "--hop", "2", "--out", str(out), "--baseline", baseline]
    if baseline == "window":
        argv += ["--model", str(make_model(tmp_path / "m.pt"))]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["baseline"] == baseline and result["window"] == 4.0 and result["hop"] == 2.0
    assert 0 <= result["R1@0.5"] <= 100 and 0 <= result["mAP"] <= 100 and result["n_without_prediction"] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == result["n_queries"] == sum(len(r.queries) for r in
                                                    read_moment_annotations(annotation_file(bench, "test")))
    for line in lines:
        assert set(line) == {"qid", "query", "vid", "pred_relevant_windows"}
        windows = line["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10 and all(len(w) == 3 and 0 <= w[0] < w[1] <= 20.0 for w in windows)
