"""Clotho-Moment and CASTELLA on disk: each split's annotation file and each recording's audio found in
their published layouts (small files written here), a one-line error naming the file expected when audio
is missing, and invalid annotation lines (CASTELLA train's line 656: a window past the recording) skipped
and reported by training while evaluation stays strict unless --skip-invalid."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.cli.main import main  # noqa: E402
from soundsift.data.readers.moment_layout import MomentData, load_moment_split  # noqa: E402
from soundsift.errors import DatasetError  # noqa: E402
from soundsift.training.evaluate_moments import evaluate_moments  # noqa: E402
from test_index import make_model  # noqa: E402


def line(qid, vid, duration, windows, query="a dog barks"):
    return json.dumps({"qid": qid, "query": query, "duration": duration, "vid": vid, "relevant_windows": windows})


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    return path


def test_clotho_moment_in_lighthouse_and_webdataset_layouts(tmp_path):
    root = tmp_path / "cm"
    write(root / "data" / "clotho_moment" / "clotho_moment_val_release.jsonl",
          line("1", "Singapore_0.0_60.0", 60, [[1, 5]]), line("2", "Park_0.0_60.0", 60, [[3, 9]]))
    dotless = touch(root / "audio" / "val" / "Singapore_00_600.wav")  # the WebDataset's file name
    dotted = touch(root / "validation" / "Park_0.0_60.0.flac")  # synth --moments' folder, another audio type
    data = MomentData(root, "val")
    assert data.layout.name == "clotho-moment" and data.split == "validation"
    assert data.annotations == root / "data" / "clotho_moment" / "clotho_moment_val_release.jsonl"
    assert data.audio("Singapore_0.0_60.0") == dotless.resolve()
    assert data.audio("Park_0.0_60.0") == dotted.resolve()
    with pytest.raises(DatasetError) as err:
        data.audio("Tokyo_0.0_60.0")
    message = str(err.value)
    assert "\n" not in message and "Tokyo_0.0_60.0.wav or Tokyo_00_600.wav" in message
    assert "clotho-moment" in message and "audio/val" in message


def test_castella_in_the_downloaders_layout(tmp_path):
    root = tmp_path / "castella"
    write(root / "castella_test_release.jsonl", line("rqfQRErjfk8_1", "rqfQRErjfk8", 190, [[4, 109], [122, 154]]))
    audio = touch(root / "download" / "audio" / "rqfQRErjfk8.wav")
    data = MomentData(root, "test")
    assert data.layout.name == "castella" and data.audio("rqfQRErjfk8") == audio.resolve()
    with pytest.raises(DatasetError, match=r"expected abc\.wav .*download/audio"):
        data.audio("abc")


def test_unknown_and_ambiguous_roots(tmp_path):
    with pytest.raises(DatasetError, match="clotho_moment_train_release.jsonl or castella_train_release.jsonl"):
        MomentData(tmp_path, "train")
    write(tmp_path / "clotho_moment_train_release.jsonl", line("1", "a", 10, [[1, 2]]))
    write(tmp_path / "data" / "castella" / "castella_train_release.jsonl", line("1", "a", 10, [[1, 2]]))
    with pytest.raises(DatasetError, match="give the folder of one dataset"):
        MomentData(tmp_path, "train")


def castella_train(root: Path) -> Path:
    # line 2 is CASTELLA train's line 656 in kind: a window far past a 299-s recording
    return write(root / "castella_train_release.jsonl", line("a_1", "a", 299, [[10, 20]]),
                 line("b_1", "b", 299, [[299, 4800]]), "not json", line("a_2", "a", 299, [[30, 60]]))


def test_training_skips_and_reports_invalid_lines_evaluation_refuses_them(tmp_path):
    root = tmp_path / "c"
    castella_train(root)
    with pytest.raises(DatasetError, match=r"castella_train_release.jsonl:2: window \[299, 4800\] lies beyond"):
        load_moment_split(root, "train")
    said: list[str] = []
    _, recordings = load_moment_split(root, "train", skip_invalid=True, log=said.append)
    assert [q.qid for r in recordings for q in r.queries] == ["a_1", "a_2"]
    assert said[0].startswith("skipped: ") and ":2: window [299, 4800]" in said[0]
    assert ":3: not a JSON line" in said[1]
    assert said[2].endswith("skipped 2 of 4 annotation lines") and len(said) == 3


def test_evaluate_skips_only_when_asked(tmp_path, capsys):
    gt = castella_train(tmp_path / "c")
    pred = write(tmp_path / "pred.jsonl", *(json.dumps({"qid": q, "pred_relevant_windows": [[10, 20, 1.0]]})
                                           for q in ("a_1", "b_1", "a_2")))
    with pytest.raises(DatasetError, match=":2: window"):
        evaluate_moments(pred, gt)
    result = evaluate_moments(pred, gt, skip_invalid=True)
    assert result["n_skipped"] == 2 and result["n_queries"] == 2 and result["R1@0.5"] == 50.0
    assert "skipped 2 of 4 annotation lines" in capsys.readouterr().err
    assert main(["-q", "evaluate", "--task", "moments", "--predictions", str(pred), "--annotations", str(gt)]) == 2
    assert main(["-q", "evaluate", "--task", "moments", "--predictions", str(pred), "--annotations", str(gt),
                 "--skip-invalid"]) == 0


def as_castella(bench: Path, root: Path) -> None:
    """The synth --moments benchmark moved into CASTELLA's layout: lighthouse's file names, every
    recording in download/audio/."""
    (root / "download" / "audio").mkdir(parents=True)
    for split, lh in (("development", "train"), ("validation", "val"), ("evaluation", "test")):
        shutil.copy(bench / f"clotho_moment_{lh}_release.jsonl", root / f"castella_{lh}_release.jsonl")
        for wav in (bench / split).glob("*.wav"):
            shutil.copy(wav, root / "download" / "audio" / wav.name)


def test_train_and_evaluate_on_a_castella_layout_with_a_bad_line(tmp_path, capsys):
    bench, root = tmp_path / "bench", tmp_path / "castella"
    assert main(["-q", "synth", "--moments", "--preset", "tiny", "--seed", "4", "--out", str(bench)]) == 0
    as_castella(bench, root)
    train = root / "castella_train_release.jsonl"
    first = json.loads(train.read_text().splitlines()[0])
    bad = {**first, "qid": "bad_1", "relevant_windows": [[first["duration"], 4800]]}
    train.write_text(train.read_text() + json.dumps(bad) + "\n")
    model = str(make_model(tmp_path / "m.pt"))
    capsys.readouterr()
    assert main(["-q", "train-moments", "--data-root", str(root), "--model", model, "--out", str(tmp_path / "run"),
                 "--steps", "2", "--hidden", "8"]) == 0
    captured = capsys.readouterr()
    assert "lies beyond the recording" in captured.err and "skipped 1 of" in captured.err
    result = json.loads(captured.out[captured.out.index("{"):])
    assert result["eval"]["split"] == "evaluation" and result["eval"]["n_queries"] > 0
    (root / "download" / "audio" / f"{first['vid']}.wav").unlink()
    shutil.rmtree(root / "moment_features")
    assert main(["-q", "evaluate", "--task", "moments", "--data-root", str(root), "--split", "train",
                 "--model", model, "--skip-invalid"]) == 2
    err = capsys.readouterr().err
    assert f"no audio for recording {first['vid']!r} (castella, development): expected {first['vid']}.wav" in err
