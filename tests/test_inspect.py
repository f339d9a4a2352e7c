"""Dataset inspection: report contents, the ok/usable verdicts and the ``data info`` entry point."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from soundsift.cli.data import data_info_main
from soundsift.data.check import format_report, inspect_dataset
from soundsift.errors import UnknownNameError
from test_readers import CLOTHO_HEADER, caps, tone, write_csv, write_wavcaps


def clean_clotho(root: Path) -> Path:
    for split in ("development", "validation"):
        tone(root / split / f"{split} one.wav")
        tone(root / split / "two, 2.wav")
        write_csv(
            root / f"clotho_captions_{split}.csv",
            CLOTHO_HEADER,
            [[f"{split} one.wav", *caps("1")], ["two, 2.wav", *caps("2")]],
        )
    return root


def args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"no_audio_check": False, "json": False, "allow_problems": False, "relevance": None, **kw})


def test_clean_clotho_is_ok_and_missing_split_is_listed(tmp_path: Path, capsys) -> None:
    report = inspect_dataset("clotho", clean_clotho(tmp_path))
    assert report.ok and report.usable and report.n_problems == 0
    by_name = {s.name: s for s in report.splits}
    assert (by_name["development"].n_clips, by_name["development"].n_captions) == (2, 10)
    assert not by_name["evaluation"].found
    text = format_report(report)
    assert "development: 2 clips, 10 captions, 0 problems" in text and "evaluation: not found" in text
    assert text.endswith("OK")
    assert data_info_main(args(format="clotho", root=str(tmp_path))) == 0
    assert "OK" in capsys.readouterr().out


def test_problems_make_report_not_ok_but_usable(tmp_path: Path, capsys) -> None:
    root = clean_clotho(tmp_path)
    (root / "validation" / "two, 2.wav").write_bytes(b"\x00garbage" * 50)
    write_csv(
        root / "clotho_captions_development.csv",
        CLOTHO_HEADER,
        [["development one.wav", *caps("1")], ["gone.wav", *caps("g")], ["two, 2.wav", "", *caps("2")[1:]]],
    )
    report = inspect_dataset("clotho", root, check_audio=True)
    assert not report.ok and report.usable and report.n_problems == 3
    text = format_report(report)
    assert "clotho_captions_development.csv, row 3: audio file not found" in text
    assert "clotho_captions_development.csv, row 4: caption_1" in text
    assert "clotho_captions_validation.csv, row 3: unreadable or corrupt audio" in text
    assert "NOT OK: 3 problems" in text
    # without the audio check the corrupt file passes (existence only)
    assert inspect_dataset("clotho", root, check_audio=False).n_problems == 2
    assert data_info_main(args(format="clotho", root=str(root))) == 1
    assert data_info_main(args(format="clotho", root=str(root), allow_problems=True)) == 0
    capsys.readouterr()
    assert data_info_main(args(format="clotho", root=str(root), json=True)) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["n_problems"] == 3
    dev = next(s for s in out["splits"] if s["name"] == "development")
    assert {"file", "row", "message"} <= set(dev["problems"][0])


def test_bad_columns_and_empty_split_are_unusable(tmp_path: Path) -> None:
    root = clean_clotho(tmp_path)
    write_csv(root / "clotho_captions_validation.csv", ["name", "caption"], [["x", "y"]])
    report = inspect_dataset("clotho", root)
    val = next(s for s in report.splits if s.name == "validation")
    assert val.error and "'name', 'caption'" in val.error and not report.usable
    assert "validation: ERROR" in format_report(report) and "unusable" in format_report(report)

    write_csv(root / "clotho_captions_validation.csv", CLOTHO_HEADER, [["absent.wav", *caps("a")]])
    report = inspect_dataset("clotho", root)
    assert not report.usable  # a split that exists but yields no clip


def test_nothing_found_and_unknown_format(tmp_path: Path, capsys) -> None:
    assert not inspect_dataset("clotho", tmp_path).usable
    assert "folder not found" in inspect_dataset("audiocaps", tmp_path / "nope").error
    with pytest.raises(UnknownNameError, match="unknown dataset format 'nope'"):
        inspect_dataset("nope", tmp_path)
    report = inspect_dataset("folder", tmp_path)  # no captions file
    assert report.error and "captions.csv" in report.error and not report.ok


def test_wavcaps_and_folder_reports(tmp_path: Path) -> None:
    write_wavcaps(tmp_path / "wc")
    report = inspect_dataset("wavcaps", tmp_path / "wc")
    train = report.splits[0]
    assert train.details["excluded"] == 1 and train.n_clips == 4 and not report.ok
    assert "excluded: 1" in format_report(report)

    tone(tmp_path / "f" / "a.wav")
    tone(tmp_path / "f" / "b.wav")
    write_csv(
        tmp_path / "f" / "captions.csv",
        ["file", "caption", "split"],
        [["a.wav", "x", "train"], ["b.wav", "y", "val"]],
    )
    report = inspect_dataset("folder", tmp_path / "f")
    assert [s.name for s in report.splits] == ["train", "val"] and report.ok


def test_folder_without_split_column_shows_the_automatic_hold_out(tmp_path: Path, capsys) -> None:
    for name in "abcd":
        tone(tmp_path / f"{name}.wav")
    write_csv(tmp_path / "captions.csv", ["file", "caption"],
              [[f"{name}.wav", f"sound {name}"] for name in "abcd"] + [["../out.wav", "escapes"]])
    report = inspect_dataset("folder", tmp_path)
    sizes = {s.name: s.n_clips for s in report.splits}
    assert sizes == {"train": 2, "val": 1, "test": 1}  # what training and evaluation will read
    assert report.n_problems == 1  # the bad row, once (each split's reading meets it)
    assert "held out automatically" in report.notes[0] and "SHA-1" in report.notes[0]
    text = format_report(report)
    assert "note: no split column: val and test were held out automatically, 10% of the files each" in text
    assert "  val: 1 clips, 1 captions" in text
    assert data_info_main(args(format="folder", root=str(tmp_path), json=True, allow_problems=True)) == 0
    assert "held out automatically" in json.loads(capsys.readouterr().out)["notes"][0]
