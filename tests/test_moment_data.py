"""Moment readers on small files in each published layout, and ``evaluate --task moments`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soundsift.cli.main import main
from soundsift.data.readers.moments import read_moment_annotations, read_moment_predictions
from soundsift.errors import DatasetError

# the layouts of lighthouse's data/clotho_moment/*_release.jsonl and data/castella/*_release.jsonl
CLOTHO_MOMENT = [
    {"qid": "32694", "query": "A toilet flushes.", "duration": 60, "vid": "Singapore_0.0_60.0",
     "relevant_windows": [[41.1, 48.1]], "fg_dB": 0.74},
    {"qid": "32695", "query": "People shout.", "duration": 60, "vid": "Singapore_1.0_61.0",
     "relevant_windows": [[26.6, 51.6]], "fg_dB": -1.9},
]
CASTELLA = [
    {"qid": "rqf_1", "query": "Music is playing", "duration": 190, "vid": "rqf", "relevant_windows": [[4, 109], [122, 154]]},
    {"qid": "rqf_2", "query": "Loud cheering", "duration": 190, "vid": "rqf", "relevant_windows": [[169, 191]]},
    {"qid": "rwb_1", "query": "A door", "duration": 74, "vid": "rwb", "relevant_windows": [[21, 26]]},
]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_clotho_moment_layout(tmp_path: Path) -> None:
    recordings = read_moment_annotations(write(tmp_path / "cm.jsonl", CLOTHO_MOMENT))
    assert [(r.vid, r.duration) for r in recordings] == [("Singapore_0.0_60.0", 60.0), ("Singapore_1.0_61.0", 60.0)]
    assert recordings[0].queries[0].qid == "32694" and recordings[0].queries[0].windows == ((41.1, 48.1),)


def test_castella_layout_groups_queries_by_recording(tmp_path: Path) -> None:
    recordings = read_moment_annotations(write(tmp_path / "c.jsonl", CASTELLA))
    assert [(r.vid, len(r.queries)) for r in recordings] == [("rqf", 2), ("rwb", 1)]
    assert recordings[0].queries[0].windows == ((4.0, 109.0), (122.0, 154.0))
    assert recordings[0].queries[1].windows == ((169.0, 191.0),)  # whole-second end 1 s past the duration


@pytest.mark.parametrize("row, message", [
    ({"qid": "a", "query": "q", "vid": "v", "relevant_windows": [[0, 1]]}, r"bad\.jsonl:2: unknown layout: .*missing duration"),
    ({"qid": "a", "query": "q", "vid": "v", "duration": 60, "relevant_windows": [[5, 4]]}, r"bad\.jsonl:2: window \[5, 4\] ends before it starts"),
    ({"qid": "a", "query": "q", "vid": "v", "duration": 60, "relevant_windows": [[50, 62.5]]}, r"bad\.jsonl:2: .*\[50, 62.5\] lies beyond the recording 'v' \(duration 60 s\)"),
    ({"qid": "a", "query": "q", "vid": "v", "duration": 60, "relevant_windows": [[-1, 2]]}, "beyond the recording"),
    ({"qid": "a", "query": "q", "vid": "v", "duration": 60, "relevant_windows": [[1]]}, r"must be \[start, end\]"),
    ({"qid": "32694", "query": "q", "vid": "x", "duration": 60, "relevant_windows": []}, "qid '32694' occurs twice"),
    ("{not json", r"bad\.jsonl:2: not a JSON line"),
])
def test_bad_annotations_are_refused_naming_file_and_line(tmp_path: Path, row, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", [CLOTHO_MOMENT[0], row])
    with pytest.raises(DatasetError, match=message) as info:
        read_moment_annotations(path)
    assert "\n" not in str(info.value)


def test_predictions_reader(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", [{"qid": 1, "query": "q", "vid": "v", "pred_relevant_windows": [[0, 1, 0.5]]}])
    assert read_moment_predictions(path) == {"1": [(0.0, 1.0, 0.5)]}
    write(path, [{"qid": 1, "pred_relevant_windows": [[0, 1]]}])
    with pytest.raises(DatasetError, match=r"p\.jsonl:1: a window must be \[start, end, score\]"):
        read_moment_predictions(path)
    write(path, [{"qid": 1, "windows": []}])
    with pytest.raises(DatasetError, match="unknown layout.*missing pred_relevant_windows"):
        read_moment_predictions(path)


def test_evaluate_task_moments_cli(tmp_path: Path, capsys) -> None:
    gt = write(tmp_path / "gt.jsonl", CASTELLA)
    pred = write(tmp_path / "pred.jsonl", [
        {"qid": "rqf_1", "query": "", "vid": "rqf", "pred_relevant_windows": [[4, 109, 0.9], [0, 3, 0.1]]},
        {"qid": "rqf_2", "query": "", "vid": "rqf", "pred_relevant_windows": [[0, 50, 0.9]]},
    ])  # rwb_1 has no prediction: it scores 0
    assert main(["evaluate", "--task", "moments", "--predictions", str(pred), "--annotations", str(gt)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["R1@0.5"], out["R1@0.7"], out["n_queries"], out["n_without_prediction"]) == (33.33, 33.33, 3, 1)
    assert out["mAP@0.5"] == round(100 * 0.5 / 3, 2)  # rqf_1: one of two windows found at rank 1


def test_evaluate_task_moments_errors_exit_2(tmp_path: Path, capsys) -> None:
    gt = write(tmp_path / "gt.jsonl", CASTELLA)
    pred = write(tmp_path / "pred.jsonl", [{"qid": "nope", "pred_relevant_windows": []}])
    assert main(["evaluate", "--task", "moments", "--predictions", str(pred), "--annotations", str(gt)]) == 2
    assert "qid 'nope' is not in" in capsys.readouterr().err
    assert main(["evaluate", "--task", "moments", "--predictions", str(pred)]) == 2
    assert main(["evaluate", "--data-root", str(tmp_path)]) == 2  # retrieval still needs --model
