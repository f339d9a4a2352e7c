"""Dataset readers on small fixtures written in the published layouts (ClothoV2, AudioCaps, WavCaps, folder)."""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsift.data.readers import READERS, combine, read_split
from soundsift.data.readers.audiocaps import read_audiocaps
from soundsift.data.readers.clotho import clotho_audio_dir, read_clotho, read_clotho_metadata
from soundsift.data.readers.folder import read_folder, safe_relative
from soundsift.data.readers.wavcaps import read_excluded_ids, read_wavcaps
from soundsift.errors import DatasetError


def tone(path: Path, seconds: float = 0.05, sr: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.1 * np.sin(np.arange(int(seconds * sr)) / 3)).astype("float32"), sr)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CLOTHO_HEADER = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
ODD = 'Rain, on a "tin" roof – café Ünïcode.wav'


def caps(stem: str) -> list[str]:
    return [f"{stem} caption {i}" for i in range(1, 6)]


@pytest.fixture()
def clotho_root(tmp_path: Path) -> Path:
    audio = tmp_path / "development"
    tone(audio / "a b.wav")
    tone(audio / ODD)
    tone(audio / "dup.wav")
    tone(audio / "empty cap.wav")
    (audio / "corrupt.wav").write_bytes(b"this is not audio" * 20)
    rows = [
        ["a b.wav", 'a dog barks, then "woof" again', *caps("a")[1:]],
        [ODD, *caps("odd")],
        ["missing.wav", *caps("m")],
        ["dup.wav", *caps("d")],
        ["empty cap.wav", "one", "", "three", "  ", "five"],
        ["corrupt.wav", *caps("c")],
        ["dup.wav", *caps("d2")],
    ]
    write_csv(tmp_path / "clotho_captions_development.csv", CLOTHO_HEADER, rows, encoding="utf-8-sig")
    return tmp_path


def test_clotho_reads_rows_in_order_and_records_problems(clotho_root: Path) -> None:
    data = read_clotho(clotho_root, "train")  # alias of development
    assert data.name == "clotho/development"
    ids = [c.clip_id for c in data.clips]
    assert ids == ["a b.wav", ODD, "dup.wav", "empty cap.wav", "corrupt.wav"]  # existence check only
    assert data.clips[0].captions[0] == 'a dog barks, then "woof" again'
    assert data.clips[1].captions == tuple(caps("odd"))
    assert data.clips[3].captions == ("one", "three", "five")
    assert data.clips[1].path == clotho_root / "development" / ODD
    by_row = {p.row: p.message for p in data.problems}
    # spreadsheet rows: header is 1, the first clip row is 2
    assert "missing.wav" in by_row[4] and "not found" in by_row[4]
    assert "caption_2" in by_row[6] or "caption_4" in by_row[6]
    assert sum(p.row == 6 for p in data.problems) == 2
    assert "duplicate" in by_row[8] and "first at row 5" in by_row[8]
    assert all(p.file.endswith("clotho_captions_development.csv") for p in data.problems)
    assert data.n_captions == 5 * 4 + 3


def test_clotho_check_audio_catches_corrupt_file(clotho_root: Path) -> None:
    data = read_clotho(clotho_root, "development", check_audio=True)
    assert "corrupt.wav" not in [c.clip_id for c in data.clips]
    corrupt = [p for p in data.problems if p.row == 7]
    assert len(corrupt) == 1 and "corrupt" in corrupt[0].message


def test_clotho_bad_columns_names_file_and_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "clotho_captions_validation.csv", ["fname", "text"], [["a.wav", "x"]])
    with pytest.raises(DatasetError) as err:
        read_clotho(tmp_path, "val")
    assert "clotho_captions_validation.csv" in str(err.value)
    assert "'fname'" in str(err.value) and "'text'" in str(err.value)


def test_clotho_missing_csv_and_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="clotho_captions_evaluation.csv"):
        read_clotho(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown Clotho split"):
        read_clotho(tmp_path, "holdout")
    with pytest.raises(DatasetError, match="clotho_captions_development.csv"):
        read_clotho(tmp_path, "Training")  # a usual spelling of the training split


@pytest.mark.parametrize("layout", ["{s}/{s}", "clotho_audio_{s}", "clotho_audio_files/{s}"])
def test_clotho_alternative_audio_layouts(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / layout.format(s="evaluation")
    tone(folder / "x.wav")
    write_csv(tmp_path / "clotho_captions_evaluation.csv", CLOTHO_HEADER, [["x.wav", *caps("x")]])
    assert clotho_audio_dir(tmp_path, "test") == folder
    data = read_clotho(tmp_path, "evaluation")
    assert [c.path for c in data.clips] == [folder / "x.wav"] and not data.problems


def test_clotho_matches_nfd_file_names(tmp_path: Path) -> None:
    tone(tmp_path / "development" / unicodedata.normalize("NFD", "café.wav"))
    write_csv(tmp_path / "clotho_captions_development.csv", CLOTHO_HEADER, [["café.wav", *caps("c")]])
    data = read_clotho(tmp_path, "development")
    assert len(data.clips) == 1 and data.clips[0].path.exists()


def test_clotho_no_audio_folder_is_one_problem(tmp_path: Path) -> None:
    write_csv(tmp_path / "clotho_captions_development.csv", CLOTHO_HEADER, [["x.wav", *caps("x")]] * 1)
    data = read_clotho(tmp_path, "development")
    assert data.clips == [] and len(data.problems) == 1 and "no audio folder" in data.problems[0].message


def test_clotho_metadata_iso_8859_1(tmp_path: Path) -> None:
    header = [
        "file_name",
        "keywords",
        "sound_id",
        "sound_link",
        "start_end_samples",
        "manufacturer",
        "license",
    ]
    rows = [["é.wav", "pluie;toît", "1", "https://freesound.org/s/1", "[0, 10]", "Zoë", "CC0"]]
    write_csv(tmp_path / "clotho_metadata_development.csv", header, rows, encoding="iso-8859-1")
    raw = (tmp_path / "clotho_metadata_development.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    meta = read_clotho_metadata(tmp_path, "train")
    assert meta["é.wav"]["manufacturer"] == "Zoë" and meta["é.wav"]["keywords"] == "pluie;toît"


def test_audiocaps_groups_rows_and_finds_name_variants(tmp_path: Path) -> None:
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    rows = [
        ["1", "-abc", "30", "a man speaks, loudly"],
        ["2", "def", "0", "birds chirp"],
        ["3", "-abc", "30", 'then "a car" passes'],
        ["4", "gone", "10", "wind"],
        ["5", "ghi", "20", "engine idles"],
        ["6", "def", "0", ""],
        ["7", "xyz", "abc", "bad start"],
        ["8", "jkl", "5", "numbered file"],
    ]
    write_csv(tmp_path / "val.csv", header, rows)
    audio = tmp_path / "audio" / "val"
    tone(audio / "-abc_30.wav")
    tone(audio / "Ydef.flac")
    tone(audio / "ghi_20.000.ogg")
    tone(audio / "8.wav")
    data = read_split("audiocaps", tmp_path, "validation")
    assert data.name == "audiocaps/val"
    assert [c.clip_id for c in data.clips] == ["-abc_30", "def_0", "ghi_20", "jkl_5"]
    assert data.clips[0].captions == ("a man speaks, loudly", 'then "a car" passes')
    assert data.clips[1].path.name == "Ydef.flac" and data.clips[3].path.name == "8.wav"
    msgs = {p.row: p.message for p in data.problems}
    assert "gone_10" in msgs[5] and "not found" in msgs[5]
    assert "empty caption" in msgs[7] and "not a number" in msgs[8]


def test_audiocaps_bad_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ["youtube_id", "caption"], [["a", "b"]])
    with pytest.raises(DatasetError, match=r"train\.csv.*'youtube_id', 'caption'"):
        read_audiocaps(tmp_path, "train")


def write_wavcaps(root: Path, fsd_json: str = "fsd_final_2s.json") -> None:
    def dump(source: str, name: str, entries: list[dict]) -> None:
        (root / source).mkdir(parents=True, exist_ok=True)
        (root / source / name).write_text(json.dumps({"num_captions_per_audio": 1, "data": entries}))

    author = "/mnt/fast/nobackup/someone/WavCaps/"  # absolute author paths must be ignored
    dump(
        "AudioSet_SL",
        "as_final.json",
        [
            {"id": "Yabc.wav", "caption": "a dog barks", "audio": author + "Yabc.flac", "duration": 10.0},
            {"id": "Ymissing.wav", "caption": "gone", "audio": author + "x.flac", "duration": 10.0},
        ],
    )
    dump("BBC_Sound_Effects", "bbc_final.json", [{"id": "07075004", "caption": 'a train, "fast"'}])
    dump(
        "FreeSound",
        fsd_json,
        [
            {"id": "180913", "caption": "rain"},
            {"id": "42", "caption": "excluded clip"},
            {"id": "43", "caption": ""},
            {"id": "180913", "caption": "again"},
        ],
    )
    dump("SoundBible", "sb_final.json", [{"id": "1", "caption": "a bell"}])
    for source, ident in [
        ("AudioSet_SL", "Yabc"),
        ("BBC_Sound_Effects", "07075004"),
        ("FreeSound", "180913"),
        ("FreeSound", "42"),
        ("FreeSound", "43"),
        ("SoundBible", "1"),
    ]:
        tone(root / "audio" / source / f"{ident}.flac")
    write_csv(root / "dcase2024_task6_excluded_freesound_ids.csv", ["id"], [["42"], ["99.0"]])


def test_wavcaps_reads_sources_and_excludes_dcase_ids(tmp_path: Path) -> None:
    write_wavcaps(tmp_path)
    data = read_wavcaps(tmp_path)
    assert [c.clip_id for c in data.clips] == [
        "AudioSet_SL/Yabc",
        "BBC_Sound_Effects/07075004",
        "FreeSound/180913",
        "SoundBible/1",
    ]
    assert data.clips[0].path == tmp_path / "audio" / "AudioSet_SL" / "Yabc.flac"
    assert data.excluded == 1 and data.per_source["FreeSound"] == 1
    messages = " | ".join(str(p) for p in data.problems)
    assert "Ymissing" in messages and "empty or missing caption" in messages and "duplicate id" in messages
    assert any(p.row == 2 and p.file.endswith("as_final.json") for p in data.problems)


def test_wavcaps_fsd_final_fallback_and_missing_exclusion_list(tmp_path: Path) -> None:
    write_wavcaps(tmp_path, fsd_json="fsd_final.json")
    (tmp_path / "dcase2024_task6_excluded_freesound_ids.csv").unlink()
    data = read_wavcaps(tmp_path)
    assert data.excluded == 0 and "FreeSound/42" in [c.clip_id for c in data.clips]
    assert any("NOT excluded" in p.message for p in data.problems)


def test_wavcaps_exclusion_csv_robust(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", ["Freesound_ID", "reason"], [["12.wav", "x"], [" 13 ", "y"], ["14.0", "z"]])
    assert read_excluded_ids(tmp_path / "a.csv") == {"12", "13", "14"}
    (tmp_path / "b.csv").write_text("7\n8\n")
    assert read_excluded_ids(tmp_path / "b.csv") == {"7", "8"}


def test_wavcaps_bad_json_and_no_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no WavCaps JSON"):
        read_wavcaps(tmp_path)
    (tmp_path / "SoundBible").mkdir()
    (tmp_path / "SoundBible" / "sb_final.json").write_text(json.dumps({"items": []}))
    with pytest.raises(DatasetError, match=r"sb_final\.json.*\"data\""):
        read_wavcaps(tmp_path, sources=("SoundBible",))


def test_folder_csv_multiple_captions_splits_and_escapes(tmp_path: Path) -> None:
    tone(tmp_path / "clips" / "a, b é.wav")
    tone(tmp_path / "c.flac")
    tone(tmp_path.parent / "outside.wav")
    rows = [
        ["clips/a, b é.wav", 'first, "quoted"', "train"],
        ["clips/a, b é.wav", "second", "train"],
        ["c.flac", "test clip", "test"],
        ["../outside.wav", "escape", "train"],
        [str(tmp_path / "c.flac"), "absolute", "train"],
        ["clips/../../outside.wav", "sneaky", "train"],
        ["nope.wav", "missing", "train"],
        ["c.flac", "leak", "train"],
        ["clips/a, b é.wav", "", "train"],
    ]
    write_csv(tmp_path / "captions.csv", ["file", "caption", "split"], rows)
    train = read_folder(tmp_path, "train")
    assert [c.clip_id for c in train.clips] == ["clips/a, b é.wav"]
    assert train.clips[0].captions == ('first, "quoted"', "second")
    msgs = {p.row: p.message for p in train.problems}
    assert all("escapes" in msgs[r] for r in (5, 6, 7))
    assert (
        "not found" in msgs[8] and "split 'train' here but 'test'" in msgs[9] and "empty caption" in msgs[10]
    )
    everything = read_split("folder", tmp_path, None)
    assert [c.clip_id for c in everything.clips] == ["clips/a, b é.wav", "c.flac"]


def test_folder_jsonl_and_no_split_column(tmp_path: Path) -> None:
    tone(tmp_path / "x.wav")
    lines = [
        json.dumps({"file": "x.wav", "caption": ["one", "two"]}),
        "{broken",
        json.dumps({"file": "/etc/passwd", "caption": "no"}),
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    data = read_folder(tmp_path)
    assert [c.captions for c in data.clips] == [("one", "two")]
    assert {p.row for p in data.problems} == {2, 3}
    with pytest.raises(DatasetError, match="no 'split' column"):
        read_folder(tmp_path, "train")  # no object carries a split
    write_csv(tmp_path / "mine.csv", ["file", "caption"], [["x.wav", "cap"]])
    with pytest.raises(DatasetError, match="no 'split' column"):
        read_folder(tmp_path, "train", captions_file="mine.csv")
    write_csv(tmp_path / "bad.csv", ["audio", "text"], [["x.wav", "cap"]])
    with pytest.raises(DatasetError, match=r"bad\.csv.*found columns: 'audio', 'text'"):
        read_folder(tmp_path, captions_file="bad.csv")


def test_safe_relative() -> None:
    assert safe_relative("a/./b.wav") == "a/b.wav"
    assert safe_relative("a\\b.wav") == "a/b.wav"
    for bad in ("/abs.wav", "..", "../x.wav", "a/../../x.wav", "C:\\x.wav", "", "\\\\server\\x.wav"):
        assert safe_relative(bad) is None, bad


def test_combine_prefixes_ids(clotho_root: Path, tmp_path: Path) -> None:
    clotho = read_clotho(clotho_root, "development")
    write_wavcaps(tmp_path / "wc")
    wavcaps = read_wavcaps(tmp_path / "wc")
    both = combine([clotho, wavcaps], "pretrain")
    assert both.name == "pretrain" and len(both.clips) == len(clotho.clips) + len(wavcaps.clips)
    assert both.clips[0].clip_id == "clotho/development/a b.wav"
    assert len({c.clip_id for c in both.clips}) == len(both.clips)
    assert len(both.problems) == len(clotho.problems) + len(wavcaps.problems)
    named = combine({"clotho": clotho}, "x")
    assert named.clips[0].clip_id == "clotho/a b.wav"
    with pytest.raises(ValueError, match="twice"):
        combine([clotho, clotho], "x")
    assert set(READERS) == {"clotho", "audiocaps", "wavcaps", "folder"}
    with pytest.raises(ValueError, match="unknown dataset format"):
        read_split("nope", tmp_path, None)
