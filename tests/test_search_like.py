"""Query by example (`search --like FILE`, `/api/search?like=ID`, combined with text) and the
spectrogram thumbnails made at index time (`/api/thumbnail/{id}`)."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soundsift.search.builder as build_module  # noqa: E402
import soundsift.search.scan as scan_module  # noqa: E402
from soundsift.checkpoints import load_model  # noqa: E402
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import AudioError, ConfigError, SearchIndexError  # noqa: E402
from soundsift.model import DualEncoder  # noqa: E402
from soundsift.search.build import build_index  # noqa: E402
from soundsift.search.index import TextSearcher, combine_queries, open_index  # noqa: E402
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH, encode_png, make_thumbnail  # noqa: E402
from test_index import GOOD, _touch_later, make_library, make_model, to_legacy, write_sound  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("like")
    lib = make_library(base / "sounds")
    model = make_model(base / "model.pt")
    build_index(lib, base / "idx", model, progress=False)
    return lib, model, base / "idx"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, after checking the signature and every chunk's CRC."""
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert [c[0] for c in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, colour) == (8, 0)  # 8-bit grayscale
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == height * (width + 1)
    return width, height


# ------------------------------------------------------------------------------- thumbnails


def test_png_encoder_round_trips_pixels():
    img = (np.arange(5 * 7, dtype=np.uint8) * 7).reshape(5, 7)
    data = encode_png(img)
    assert png_size(data) == (7, 5)
    raw = zlib.decompress(data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8])
    rows = np.frombuffer(raw, np.uint8).reshape(5, 8)
    assert (rows[:, 0] == 0).all() and np.array_equal(rows[:, 1:], img)
    with pytest.raises(ValueError):
        encode_png(np.zeros((0, 4), np.uint8))


def test_thumbnail_shows_a_tone_in_its_band_and_silence_as_black():
    sr = 16000
    t = np.arange(sr) / sr
    low = make_thumbnail(0.3 * np.sin(2 * np.pi * 200 * t), sr)
    high = make_thumbnail(0.3 * np.sin(2 * np.pi * 5000 * t), sr)
    assert low.shape == high.shape == (THUMB_HEIGHT, THUMB_WIDTH) and low.dtype == np.uint8
    assert np.argmax(low.mean(axis=1)) > np.argmax(high.mean(axis=1))  # row 0 is the top (high frequencies)
    assert not make_thumbnail(np.zeros(sr, np.float32), sr).any()
    assert make_thumbnail(np.ones(3, np.float32), 8000).shape == (THUMB_HEIGHT, THUMB_WIDTH)  # shorter than an FFT


def test_every_indexed_item_has_a_valid_png_thumbnail(built):
    _, _, idx = built
    index = open_index(idx)
    assert index.thumbnails is not None and index.thumbnails.shape == (len(GOOD), THUMB_HEIGHT, THUMB_WIDTH)
    assert json.loads((index.version_dir / "manifest.json").read_text())["thumbnails"]["file"] == "thumbnails.npy"
    for e in index.entries:
        png = index.thumbnail_png(e.id)
        assert png_size(png) == (THUMB_WIDTH, THUMB_HEIGHT)
        assert index.thumbnails[index.entries.index(e)].max() == 255  # drawn, not blank
    assert index.thumbnail_png(10**9) is None


def test_thumbnails_are_drawn_only_for_new_and_changed_files(built, tmp_path, monkeypatch):
    lib, model, _ = built
    work, out = tmp_path / "sounds", tmp_path / "idx"
    shutil.copytree(lib, work)
    build_index(work, out, model, progress=False)
    first = open_index(out)
    before = {e.path: np.array(first.thumbnails[i]) for i, e in enumerate(first.entries)}

    write_sound(work / "new/siren.flac", 32000, 1, 0.7, "FLAC", None, seed=40)  # added
    write_sound(work / "animals/dog.wav", 16000, 1, 1.0, "WAV", None, seed=41)  # changed content
    _touch_later(work / "animals/dog.wav")
    (work / "animals/birds/chirp.ogg").rename(work / "chirp-moved.ogg")  # renamed: reused by content
    _touch_later(work / "long.wav")  # touched: reused by content

    drawn = []
    real = build_module.make_thumbnail
    for where in (build_module, scan_module):  # drawn while decoding (scan) or for a kept embedding (build)
        monkeypatch.setattr(where, "make_thumbnail", lambda wave, sr: drawn.append(len(wave)) or real(wave, sr))
    report = build_index(work, out, model, progress=False)
    assert len(drawn) == report.thumbnails == report.embedded == 2
    second = open_index(out)
    after = {e.path: np.array(second.thumbnails[i]) for i, e in enumerate(second.entries)}
    assert set(after) == {e.path for e in second.entries}
    for path in ("long.wav", "machines/engine.mp3", "weather/rain.flac"):
        np.testing.assert_array_equal(after[path], before[path])
    np.testing.assert_array_equal(after["chirp-moved.ogg"], before["animals/birds/chirp.ogg"])
    assert not np.array_equal(after["animals/dog.wav"], before["animals/dog.wav"])
    sr = load_model(model).sample_rate
    from soundsift.audio import load_audio

    np.testing.assert_array_equal(after["new/siren.flac"], real(load_audio(work / "new/siren.flac", sr), sr))
    drawn.clear()
    assert build_index(work, out, model, progress=False).thumbnails == 0 and drawn == []


def test_an_index_built_before_thumbnails_gets_them_without_re_embedding(built, tmp_path, monkeypatch):
    lib, model, _ = built
    out = tmp_path / "idx"
    build_index(lib, out, model, progress=False)
    vdir = to_legacy(out)  # thumbnails came before segments (index format 2)
    manifest = json.loads((vdir / "manifest.json").read_text())
    del manifest["thumbnails"]
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    (vdir / "thumbnails.npy").unlink()
    old = open_index(out)
    assert old.thumbnails is None and old.thumbnail_png(old.entries[0].id) is None

    calls = []
    real = DualEncoder.embed_waveforms
    monkeypatch.setattr(DualEncoder, "embed_waveforms", lambda self, w, *a, **k: calls.append(len(w)) or real(self, w, *a, **k))
    with pytest.warns(UserWarning, match="migrated once"):
        report = build_index(lib, out, model, progress=False)
    assert calls == [] and report.unchanged == len(GOOD) and report.thumbnails == len(GOOD)
    index = open_index(out)
    assert all(png_size(index.thumbnail_png(e.id)) == (THUMB_WIDTH, THUMB_HEIGHT) for e in index.entries)


# ------------------------------------------------------------------------------- query by example


def test_combine_queries_is_the_renormalised_sum_of_unit_vectors():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 0.5])
    np.testing.assert_allclose(combine_queries(a, b), [2**-0.5, 2**-0.5], atol=1e-6)
    np.testing.assert_allclose(combine_queries(None, b), [0.0, 1.0])
    np.testing.assert_allclose(combine_queries(a, -a), [-1.0, 0.0])  # cancelled out: the example alone
    with pytest.raises(ConfigError):
        combine_queries(None, None)


def test_an_indexed_file_queried_by_itself_ranks_first(built):
    lib, model_path, idx = built
    index, model = open_index(idx), load_model(model_path)
    searcher = TextSearcher(index, model)
    for e in index.entries:
        vec = searcher.embed_file(lib / e.path)
        np.testing.assert_allclose(vec, index.vector(e.id), atol=1e-5)  # the build's embedding
        hits = searcher.search(None, 3, like=vec)
        assert hits[0].id == e.id and hits[0].score == pytest.approx(1.0, abs=1e-4)
        hits = searcher.search(None, len(GOOD), like=index.vector(e.id), exclude=e.id)
        assert e.id not in [h.id for h in hits] and len(hits) == len(GOOD) - 1
        assert [h.rank for h in hits] == list(range(1, len(GOOD)))
    with pytest.raises(SearchIndexError, match="no indexed sound has id 999"):
        index.vector(999)
    with pytest.raises(AudioError, match="notes.txt"):
        searcher.embed_file(lib / "notes.txt")
    with pytest.raises(ConfigError):
        searcher.search(None, 3)


def test_text_and_example_combined(built):
    lib, model_path, idx = built
    index, model = open_index(idx), load_model(model_path)
    searcher = TextSearcher(index, model)
    example = index.vector(index.entries[0].id)
    t = model.embed_texts(["rain"])[0]
    q = t + example
    q /= np.linalg.norm(q)
    expected = np.argsort(-(index.embeddings @ q), kind="stable")
    hits = searcher.search("rain", len(GOOD), like=example)
    assert [h.id for h in hits] == [index.entries[i].id for i in expected]
    assert hits[0].score == pytest.approx(float(index.embeddings[expected[0]] @ q), abs=1e-5)
    excluded = searcher.search("rain", 3, like=example, exclude=index.entries[0].id)
    assert [h.id for h in excluded] == [index.entries[i].id for i in expected if i != 0][:3]


# ------------------------------------------------------------------------------- CLI


def test_cli_like_leaves_an_indexed_example_out_as_the_api_does(built, capsys, tmp_path):
    lib, _, idx = built
    index = open_index(idx)
    searcher = TextSearcher(index, load_model(index.model_path))
    for e in index.entries:
        assert main(["search", str(idx), "--like", str(lib / e.path), "-k", "100", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert e.id not in [h["id"] for h in hits] and len(hits) == len(GOOD) - 1
        api = searcher.search(None, 100, like=index.vector(e.id), exclude=e.id)  # what like=ID answers
        assert [(h["id"], h["path"]) for h in hits] == [(h.id, h.path) for h in api]
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in api], abs=1e-4)
    assert main(["search", str(idx), "rain", "--like", str(lib / "long.wav"), "-k", "100", "--json"]) == 0
    combined = json.loads(capsys.readouterr().out)
    long_id = next(e.id for e in index.entries if e.path == "long.wav")
    assert combined == [h.to_dict() for h in searcher.search("rain", 100, like=index.vector(long_id), exclude=long_id)]
    # A copy of an indexed file is recognised by its content; a sound that is not indexed leaves nothing out.
    shutil.copy(lib / "long.wav", tmp_path / "copy.wav")
    write_sound(tmp_path / "new.wav", 16000, 1, 0.6, "WAV", None, seed=50)
    for example, n in ((tmp_path / "copy.wav", len(GOOD) - 1), (tmp_path / "new.wav", len(GOOD))):
        assert main(["search", str(idx), "--like", str(example), "-k", "100", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert len(hits) == n and (n == len(GOOD) or long_id not in [h["id"] for h in hits])


def test_find_file_prefers_the_indexed_copy_at_the_examples_own_path(built, tmp_path):
    lib, model, _ = built
    work = tmp_path / "sounds"
    shutil.copytree(lib, work)
    shutil.copy(work / "long.wav", work / "a-duplicate.wav")  # sorts first: gets the smaller id
    build_index(work, tmp_path / "idx", model, progress=False)
    index = open_index(tmp_path / "idx")
    ids = {e.path: e.id for e in index.entries}
    assert index.find_file(work / "long.wav") == ids["long.wav"]
    assert index.find_file(work / "a-duplicate.wav") == ids["a-duplicate.wav"]
    assert index.find_file(work / "animals" / ".." / "long.wav") == ids["long.wav"]
    shutil.copy(work / "long.wav", tmp_path / "elsewhere.wav")
    assert index.find_file(tmp_path / "elsewhere.wav") == ids["a-duplicate.wav"]
    assert index.find_file(work / "notes.txt") is None


def test_cli_like_errors_are_one_line(built, capsys, tmp_path):
    lib, _, idx = built
    for bad, message in ((lib / "notes.txt", "cannot decode audio"), (lib / "broken.wav", "cannot decode audio"),
                         (tmp_path / "missing.wav", "file not found"), (lib / "animals", "is a directory")):
        assert main(["search", str(idx), "--like", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and bad.name in err[0], err
    assert main(["search", str(idx)]) == 2
    assert "give a text query, --like FILE, or both" in capsys.readouterr().err


# ------------------------------------------------------------------------------- HTTP API


@pytest.fixture(scope="module")
def client(built):
    pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
    pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")
    from fastapi.testclient import TestClient

    from soundsift.search.server import create_app

    return TestClient(create_app(built[2]))


def test_api_like_excludes_the_item_and_combines_with_text(built, client):
    index = open_index(built[2])
    searcher = TextSearcher(index, load_model(index.model_path))
    for e in index.entries:
        r = client.get("/api/search", params={"like": e.id, "k": 100})
        assert r.status_code == 200
        hits = r.json()
        assert e.id not in [h["id"] for h in hits] and len(hits) == len(GOOD) - 1
        assert hits == [h.to_dict() for h in searcher.search(None, 100, like=index.vector(e.id), exclude=e.id)]
    e = index.entries[1]
    hits = client.get("/api/search", params={"q": "rain", "like": e.id, "k": 3}).json()
    assert hits == [h.to_dict() for h in searcher.search("rain", 3, like=index.vector(e.id), exclude=e.id)]
    assert len(hits) == 3 and e.id not in [h["id"] for h in hits]


@pytest.mark.parametrize("params, status", [
    ({"like": "abc"}, 422), ({"like": "-1"}, 422), ({"like": "1.0"}, 422), ({"like": "0x1"}, 422),
    ({"like": ""}, 422), ({"like": "9" * 100}, 422), ({"like": "123456"}, 404), ({"like": "0", "k": 0}, 422),
    ({"like": "0", "q": "x" * 1001}, 422), ({"q": "  "}, 422),
])
def test_bad_like_requests_get_4xx_json(client, params, status):
    r = client.get("/api/search", params=params)
    assert r.status_code == status and r.json()["detail"] and len(r.content) < 2000


def test_thumbnails_are_served_by_id_as_cacheable_png(built, client):
    index = open_index(built[2])
    for e in index.entries:
        r = client.get(f"/api/thumbnail/{e.id}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert png_size(r.content) == (THUMB_WIDTH, THUMB_HEIGHT) and r.content == index.thumbnail_png(e.id)
        assert "max-age" in r.headers["cache-control"] and r.headers["x-content-type-options"] == "nosniff"
        again = client.get(f"/api/thumbnail/{e.id}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and not again.content
    etags = {client.get(f"/api/thumbnail/{e.id}").headers["etag"] for e in index.entries}
    assert len(etags) == len(index.entries)
    for bad in ("123456", "abc", "-1", "..%2f..%2fmanifest.json", "0%00", "1e3", "thumbnails.npy"):
        r = client.get(f"/api/thumbnail/{bad}")
        assert 400 <= r.status_code < 500 and r.json()["detail"], bad
    assert "/api/thumbnail/{thumb_id}" in client.get("/openapi.json").json()["paths"]
