"""Search filters (``--where``, ``where=``): the grammar against a naive evaluator written here, filtered
searches against a brute-force filter of the full ranking (the k results all match), one-line errors
naming the position, in the CLI, the API and the library."""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.checkpoints import load_model  # noqa: E402
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import ConfigError  # noqa: E402
from soundsift.search.build import build_index, update_index  # noqa: E402
from soundsift.search.index import IndexEntry, open_index  # noqa: E402
from soundsift.search.sound_index import memory_index  # noqa: E402
from soundsift.search.where import parse_where  # noqa: E402
from test_index import GOOD, make_library, make_model, write_sound  # noqa: E402

FOLDERS = ["", "foley/", "foley/doors/", "foleyx/", "nature/rain/", "Music/"]
EXTS = ["wav", "WAV", "flac", "ogg", "mp3"]


def _ext(path: str) -> str:
    name = path.split("/")[-1]
    return name.split(".")[-1].lower() if "." in name else ""


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


# Each filter with a plain-Python predicate over an entry dict, written without the parser's helpers.
CASES = [
    ("duration < 5", lambda e: e["duration"] < 5),
    ("duration >= 2.5 and duration <= 10", lambda e: 2.5 <= e["duration"] <= 10),
    ("path ~ 'foley/'", lambda e: e["path"].startswith("foley/")),
    ("path ~ foley/doors/", lambda e: e["path"].startswith("foley/doors/")),
    ("path ~ '*.wav'", lambda e: fnmatch.fnmatchcase(e["path"], "*.wav")),
    ("path ~ 'foley/*/s1*'", lambda e: fnmatch.fnmatchcase(e["path"], "foley/*/s1*")),
    ("folder ~ foley", lambda e: _folder(e["path"]) == "foley" or _folder(e["path"]).startswith("foley/")),
    ("folder = 'nature/rain'", lambda e: _folder(e["path"]) == "nature/rain"),
    ("ext = WAV", lambda e: _ext(e["path"]) == "wav"),
    ("ext in (flac, .ogg)", lambda e: _ext(e["path"]) in ("flac", "ogg")),
    ("EXTENSION != mp3", lambda e: _ext(e["path"]) != "mp3"),
    ("sample_rate = 44100 or rate < 16000", lambda e: e["rate"] == 44100 or e["rate"] < 16000),
    ("channels > 1 and not (duration > 20)", lambda e: e["channels"] > 1 and not e["duration"] > 20),
    ("not path ~ 'foley/' or size < 1e5", lambda e: not e["path"].startswith("foley/") or e["size"] < 1e5),
    ("(ext = wav or ext = flac) and (folder ~ 'foley' or duration < 3)",
     lambda e: _ext(e["path"]) in ("wav", "flac") and (_folder(e["path"]).split("/")[0] == "foley"
                                                        or e["duration"] < 3)),
    ("id in (1, 5, 7)", lambda e: e["id"] in (1, 5, 7)),
    ("path > 'm' and path <= 'nature/rain/s9'", lambda e: "m" < e["path"] <= "nature/rain/s9"),
]


@pytest.fixture(scope="module")
def generated():
    """An in-memory index of 400 rows with random paths, durations, rates, channels and sizes."""
    rng = np.random.default_rng(3)
    n, dim = 400, 16
    rows = []
    for i in range(n):
        path = f"{FOLDERS[rng.integers(len(FOLDERS))]}s{i}.{EXTS[rng.integers(len(EXTS))]}"
        rows.append({"id": i, "path": path, "duration": float(np.round(rng.uniform(0.1, 30), 3)),
                     "rate": int(rng.choice([8000, 16000, 44100, 48000])), "channels": int(rng.integers(1, 3)),
                     "size": int(rng.integers(1000, 300_000))})
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = memory_index([IndexEntry(r["id"], r["path"], r["size"], 0, "", r["duration"]) for r in rows], vectors,
                         backend="exact")
    seg = index.segments[0]
    seg.entries["sample_rate"] = [r["rate"] for r in rows]
    seg.entries["channels"] = [r["channels"] for r in rows]
    index._columns.clear()
    return index, rows, vectors


@pytest.mark.parametrize("text,predicate", CASES, ids=[c[0] for c in CASES])
def test_filters_match_a_naive_evaluator(generated, text, predicate):
    index, rows, _ = generated
    mask = parse_where(text).mask(index)
    assert mask.tolist() == [bool(predicate(r)) for r in rows]
    assert 0 < mask.sum() < len(rows) or text.startswith("id in")  # the cases are not trivial


@pytest.mark.parametrize("text,predicate", CASES[:8], ids=[c[0] for c in CASES[:8]])
def test_filtered_search_is_the_brute_force_filter_of_the_full_ranking(generated, text, predicate):
    index, rows, vectors = generated
    rng = np.random.default_rng(len(text))
    q = rng.standard_normal((3, vectors.shape[1])).astype(np.float32)
    for k in (1, 10, 400):
        got = index.search_vectors(q, k, rank="files", where=text)
        for qi, hits in enumerate(got):
            order = sorted(range(len(rows)), key=lambda r: (-float(vectors[r] @ q[qi]), r))
            want = [rows[r]["id"] for r in order if predicate(rows[r])][:k]
            assert [h.id for h in hits] == want
            assert all(predicate(rows[h.id]) for h in hits)


def test_hand_computed_filter():
    entries = [IndexEntry(0, "a/x.wav", 10, 0, "", 1.0), IndexEntry(1, "a/b/y.flac", 10, 0, "", 6.0),
               IndexEntry(2, "ab/z.wav", 10, 0, "", 2.0), IndexEntry(3, "c.WAV", 10, 0, "", 9.0)]
    index = memory_index(entries, np.eye(4, dtype=np.float32), backend="exact")
    assert parse_where("folder ~ a").mask(index).tolist() == [True, True, False, False]
    assert parse_where("path ~ a").mask(index).tolist() == [True, True, True, False]
    assert parse_where("ext = wav and duration < 5").mask(index).tolist() == [True, False, True, False]
    assert parse_where("ext = wav and duration > 5").mask(index).tolist() == [False, False, False, True]
    hits = index.search_vectors(np.array([0, 0, 0, 1], np.float32), 2, rank="files", where="folder ~ a")
    assert [h.id for h in hits[0]] == [0, 1]  # the best two of the matching rows, not of all rows


@pytest.mark.parametrize("text,position,what", [
    ("duration <", 11, "expected a number"),
    ("durration < 3", 1, "expected a field"),
    ("duration < 3 foo", 14, "expected 'and', 'or' or the end"),
    ("path ~ 'abc", 8, "unclosed quote"),
    ("duration ~ 3", 10, "for text fields"),
    ("(duration < 3", 14, "expected ')'"),
    ("ext in wav", 8, "expected '(' after 'in'"),
    ("duration < 3 and", 17, "expected a field"),
    ("channels = two", 12, "expected a number"),
    ("path $ 'x'", 6, "unexpected character '$'"),
])
def test_malformed_filters_name_the_position(text, position, what):
    with pytest.raises(ConfigError) as caught:
        parse_where(text)
    message = str(caught.value)
    assert "\n" not in message and f"at position {position}:" in message and what in message


def two_segment_index(base):
    """A windowed index of the test library updated once: two segments and a deleted row."""
    lib = make_library(base / "sounds")
    model = make_model(base / "model.pt")
    out = base / "idx"
    build_index(lib, out, model, progress=False, window=4.0, hop=2.0)
    write_sound(lib / "weather/drizzle.wav", 16000, 1, 9.0, "WAV", None, seed=12)
    (lib / "machines/engine.mp3").unlink()
    update_index(out, ["weather/drizzle.wav", "machines/engine.mp3"])
    return lib, model, out


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return two_segment_index(tmp_path_factory.mktemp("where"))


def test_filters_on_a_built_index_with_segments_windows_and_deletions(library):
    lib, model_path, out = library
    index = open_index(out, backend="exact")
    assert len(index.segments) == 2 and len(index) == len(GOOD) and index.parted.keeps[0] is not None
    q = load_model(model_path).embed_texts(["rain", "a dog", "engine noise"])
    full = index.search_vectors(q, len(index))  # ranked by best moment
    by_path = {e.path: e for e in index.entries}
    stored = dict(zip(index.paths(), zip(index.column("sample_rate").tolist(), index.column("channels").tolist())))
    assert stored["weather/drizzle.wav"] == (16000, 1) and stored["weather/rain.flac"] == (22050, 2)
    for text, keep in [("duration > 1", lambda e: e.duration > 1),
                       ("folder ~ weather", lambda e: e.path.startswith("weather/")),
                       ("sample_rate = 16000", lambda e: stored[e.path][0] == 16000),
                       ("ext in (wav, flac) and duration < 10", lambda e: _ext(e.path) in ("wav", "flac")
                        and e.duration < 10)]:
        for k in (1, 2, 5):
            got = index.search_vectors(q, k, where=text)
            for qi in range(len(q)):
                want = [h for h in full[qi] if keep(by_path[h.path])][:k]
                assert [h.to_dict() for h in got[qi]] == [{**h.to_dict(), "rank": i + 1} for i, h in enumerate(want)]


def test_cli_where_and_its_errors(library, capsys):
    _, _, out = library
    assert main(["search", str(out), "rain", "--where", "folder ~ weather", "-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(h["path"].startswith("weather/") for h in hits)
    assert main(["search", str(out), "rain", "--where", "duration > 1000"]) == 0
    assert "no results match the filter" in capsys.readouterr().out
    assert main(["search", str(out), "rain", "--where", "duration <> 5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "position 11" in err and "expected a number" in err


def test_api_where(library):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    pytest.importorskip("httpx", reason="the test extra is not installed")
    from fastapi.testclient import TestClient

    from soundsift.search.server import create_app

    _, _, out = library
    client = TestClient(create_app(out))
    r = client.get("/api/search", params={"q": "rain", "k": 10, "where": "ext = wav"})
    assert r.status_code == 200 and r.json() and all(h["path"].lower().endswith(".wav") for h in r.json())
    bad = client.get("/api/search", params={"q": "rain", "where": "ext = "})
    assert bad.status_code == 422 and "at position 7" in bad.json()["detail"]
    assert client.get("/api/search", params={"q": "rain", "where": "x" * 1001}).status_code == 422


def test_filters_with_stored_faiss_segments(tmp_path, monkeypatch):
    """Segments searched with their stored FAISS index (ivfsq; exact at this size) give the same filtered
    results as the exact scan."""
    pytest.importorskip("faiss", reason="the faiss extra is not installed")
    import soundsift.search.segments as segments
    import soundsift.search.sound_index as sound_index

    monkeypatch.setattr(segments, "EXACT_LIMIT", 2)
    monkeypatch.setattr(sound_index, "EXACT_LIMIT", 2)
    lib, model, out = two_segment_index(tmp_path)
    fast, exact = open_index(out), open_index(out, backend="exact")
    assert "faiss" in fast.backend.name and fast.segments[0].faiss["kind"] == "ivfsq"
    q = load_model(model).embed_texts(["rain", "a dog"])
    for text in ("duration > 1", "folder ~ weather", "ext = wav"):
        for rank in ("moments", "files"):
            a = fast.search_vectors(q, 3, rank=rank, where=text)
            b = exact.search_vectors(q, 3, rank=rank, where=text)
            assert [[h.id for h in hits] for hits in a] == [[h.id for h in hits] for hits in b]
