"""Index build (formats, skipped files, determinism), incremental updates, atomicity, backends.

Also holds the tiny fake encoders and the generated sound library that the other search test files
(test_server, test_search_cli, test_browser) import.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from soundsift.audio import load_audio
from soundsift.checkpoints import load_model, save_model
from soundsift.encoders import (
    AudioEncoder,
    TextEncoder,
    audio_encoder_names,
    register_audio_encoder,
    register_text_encoder,
)
from soundsift.encoders.registry import text_encoder_names
from soundsift.errors import ModelMismatchError, SearchIndexError
from soundsift.model import DualEncoder
from soundsift.search.backends import ExactIndex, FaissIndex
from soundsift.search.build import build_index
from soundsift.search.index import TextSearcher, open_index

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------- tiny fake encoders


class TinyAudio(AudioEncoder):
    """Log band energies of an STFT through a fixed random projection: different sounds differ."""

    sample_rate = 16000

    def __init__(self, out_dim: int = 16, seed: int = 0, marker: str | None = None, delay: float = 0.0):
        super().__init__()
        self.out_dim = out_dim
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(17, out_dim, generator=g), persistent=False)
        self.marker, self.delay = marker, delay

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.marker:  # the atomicity test kills the process while it sleeps here
            Path(self.marker).touch()
            time.sleep(self.delay)
        x = waveform if waveform.shape[1] >= 512 else nn.functional.pad(waveform, (0, 512 - waveform.shape[1]))
        spec = torch.stft(x, 512, 256, window=torch.hann_window(512), center=False, return_complex=True).abs()
        bands = spec[:, :256].reshape(x.shape[0], 16, 16, -1).mean(dim=(2, 3))
        rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()
        feats = torch.log(torch.cat([bands, rms], dim=1) + 1e-4)
        return (feats - feats.mean(dim=1, keepdim=True)) @ self.proj


class TinyText(TextEncoder):
    """Hashed character trigrams through a fixed random projection (crc32: same in every process)."""

    def __init__(self, out_dim: int = 24, seed: int = 1):
        super().__init__()
        self.out_dim = out_dim
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(64, out_dim, generator=g), persistent=False)

    def forward(self, texts: list[str]) -> torch.Tensor:
        feats = torch.zeros(len(texts), 64)
        for i, t in enumerate(texts):
            t = f"  {t.lower()} "
            for j in range(len(t) - 2):
                feats[i, zlib.crc32(t[j : j + 3].encode()) % 64] += 1.0
        return feats @ self.proj


for _name in ("test-index-audio", "test-index-slow"):
    if _name not in audio_encoder_names():
        register_audio_encoder(_name, TinyAudio)
if "test-index-text" not in text_encoder_names():
    register_text_encoder("test-index-text", TinyText)


def make_model(path: Path, seed: int = 0, text: str = "test-index-text", **audio_kwargs) -> Path:
    """Save a tiny random model (fake audio encoder, embed_dim 32) to ``path``; ``text="tiny-bert"`` gives
    it a real (tiny) text tower, which normalises captions as the published models do."""
    torch.manual_seed(seed)
    name = "test-index-slow" if audio_kwargs else "test-index-audio"
    model = DualEncoder({"name": name, "seed": seed, **audio_kwargs}, text, embed_dim=32)
    return save_model(model, path)


def to_legacy(out: Path) -> Path:
    """Rewrite the live version of the index ``out`` as soundsift wrote it before segments (format 1:
    every entry in manifest.json, the arrays beside it); its directory."""
    from dataclasses import asdict

    index = open_index(out)
    vdir = index.version_dir
    manifest = {k: v for k, v in index.manifest.items() if k not in ("segments", "items")}
    manifest.update(version=1, entries=[asdict(e) for e in index.entries])
    np.save(vdir / "embeddings.npy", np.asarray(index.embeddings))
    np.save(vdir / "thumbnails.npy", np.asarray(index.thumbnails))
    if index.windows is not None:
        owners = index.windows.owners.astype(np.float64)[:, None]
        np.save(vdir / "window_spans.npy", np.hstack([owners, index.windows.spans]))
        np.save(vdir / "window_embeddings.npy", np.asarray(index.windows.embeddings))
        manifest["windows"]["count"] = len(index.windows)
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(out / "segments")
    return vdir


# ------------------------------------------------------------------------------- generated library

GOOD = {
    "animals/dog.wav": (16000, 1, 1.0, "WAV", None),
    "animals/birds/chirp.ogg": (48000, 2, 0.8, "OGG", None),
    "weather/rain.flac": (22050, 2, 1.5, "FLAC", None),
    "weather/Thunder Storm (ünï).WAV": (44100, 1, 0.5, "WAV", "PCM_24"),
    "machines/engine.mp3": (44100, 1, 1.2, "MP3", None),
    "long.wav": (8000, 1, 12.0, "WAV", None),
}
BAD = {"broken.wav": b"RIFF\x00\x00junk" * 10, "machines/empty.flac": b"", "voice memo.M4A": b"\x00\x00ftypM4A"}
IGNORED = {"notes.txt": b"not audio", ".hidden.wav": b"x", "._dog.wav": b"x"}


def write_sound(path: Path, sr: int, channels: int, seconds: float, fmt: str, subtype: str | None,
                seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.3 * np.sin(2 * np.pi * (200 + 300 * (seed % 7)) * t) + 0.05 * (seed % 3) * rng.standard_normal(len(t))
    data = np.stack([tone * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, format=fmt, subtype=subtype)


def make_library(root: Path) -> Path:
    """A folder of sounds in mixed formats, rates and channel counts, plus broken and ignored files."""
    for seed, (rel, spec) in enumerate(GOOD.items()):
        write_sound(root / rel, *spec, seed=seed)
    for rel, data in {**BAD, **IGNORED}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("lib") / "sounds")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "model.pt")


def test_build_indexes_every_format_and_reports_unreadable_files(lib, model_path, tmp_path):
    report = build_index(lib, tmp_path / "idx", model_path, progress=False)
    index = open_index(tmp_path / "idx")
    assert sorted(e.path for e in index.entries) == sorted(GOOD)
    assert report.files == report.embedded == report.added == len(GOOD)
    assert {s["path"] for s in report.skipped} == set(BAD)
    assert all(s["reason"] and str(lib) not in s["reason"] for s in report.skipped)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert "cannot decode" in reasons["broken.wav"] and "unsupported audio format .m4a" in reasons["voice memo.M4A"]
    skipped_txt = (index.version_dir / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped_txt) == sorted(BAD)
    assert json.loads((index.version_dir / "report.json").read_text())["files"] == len(GOOD)
    long = next(e for e in index.entries if e.path == "long.wav")
    assert long.duration == pytest.approx(12.0, abs=0.01)
    # Embeddings are exactly what the model gives each file on its own (deterministic, no batch effects).
    model = load_model(model_path)
    for e, vec in zip(index.entries, index.embeddings):
        direct = model.embed_waveforms([load_audio(lib / e.path, model.sample_rate)])[0]
        np.testing.assert_allclose(vec, direct, atol=1e-5)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    # Manifest records the model and nothing about the index leaks absolute paths into entries.
    assert index.model_identity == model.identity and index.model_path == str(model_path.resolve())
    # A second build from scratch gives identical embeddings and ids.
    build_index(lib, tmp_path / "idx2", model_path, progress=False, batch_size=3, workers=1)
    again = open_index(tmp_path / "idx2")
    assert [e.id for e in again.entries] == [e.id for e in index.entries]
    np.testing.assert_array_equal(again.embeddings, index.embeddings)


def test_decoding_in_worker_processes_gives_the_same_index(lib, model_path, tmp_path):
    """Processes decode (and hash, and draw thumbnails) exactly what threads do; errors come back too."""
    threads = build_index(lib, tmp_path / "t", model_path, progress=False, processes=False)
    procs = build_index(lib, tmp_path / "p", model_path, progress=False, processes=True, workers=2)
    a, b = open_index(tmp_path / "t"), open_index(tmp_path / "p")
    assert [(e.id, e.path, e.sha256, e.duration) for e in a.entries] == [(e.id, e.path, e.sha256, e.duration) for e in b.entries]
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(np.asarray(a.thumbnails), np.asarray(b.thumbnails))
    assert threads.skipped == procs.skipped and procs.skipped
    # a copy under a new name is reused by content, also when the hashing happens in another process
    lib2 = tmp_path / "lib2"
    shutil.copytree(lib, lib2)
    shutil.copy(lib / "long.wav", lib2 / "renamed copy.wav")
    again = build_index(lib2, tmp_path / "p", model_path, progress=False, processes=True, rebuild=False)
    assert again.reused >= 1 and "renamed copy.wav" in {e.path for e in open_index(tmp_path / "p").entries}


def test_search_ranks_by_cosine_similarity(lib, model_path, tmp_path):
    build_index(lib, tmp_path / "idx", model_path, progress=False)
    index = open_index(tmp_path / "idx")
    model = load_model(model_path)
    searcher = TextSearcher(index, model)
    hits = searcher.search("a dog barking", k=4)
    q = model.embed_texts(["a dog barking"])[0]
    expected = np.argsort(-(index.embeddings @ q), kind="stable")[:4]
    assert [h.path for h in hits] == [index.entries[i].path for i in expected]
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert hits[0].score == pytest.approx(float(index.embeddings[expected[0]] @ q), abs=1e-5)
    assert len(searcher.search("rain", k=1000)) == len(GOOD)  # k is capped at the index size
    with pytest.raises(ValueError, match="empty"):
        searcher.search("   ")


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_incremental_update_embeds_only_new_and_changed_files(lib, model_path, tmp_path, monkeypatch):
    work = tmp_path / "sounds"
    shutil.copytree(lib, work)
    out = tmp_path / "idx"
    build_index(work, out, model_path, progress=False)
    first = open_index(out)
    ids = {e.path: e.id for e in first.entries}

    write_sound(work / "new/siren.flac", 32000, 1, 0.7, "FLAC", None, seed=40)  # added
    write_sound(work / "animals/dog.wav", 16000, 1, 1.0, "WAV", None, seed=41)  # changed content
    _touch_later(work / "animals/dog.wav")
    (work / "weather/rain.flac").unlink()  # removed
    (work / "animals/birds/chirp.ogg").rename(work / "chirp-moved.ogg")  # renamed: same content
    _touch_later(work / "long.wav")  # touched only: same content, new mtime

    calls = []
    real = DualEncoder.embed_waveforms

    def counting(self, waves, *a, **kw):
        calls.extend(len(w) for w in waves)
        return real(self, waves, *a, **kw)

    monkeypatch.setattr(DualEncoder, "embed_waveforms", counting)
    report = build_index(work, out, model_path, progress=False)
    assert len(calls) == report.embedded == 2  # siren + changed dog; nothing else decoded
    assert (report.added, report.updated, report.removed) == (2, 2, 2)
    assert report.reused == 2 and report.unchanged == len(GOOD) - 4
    second = open_index(out)
    new_ids = {e.path: e.id for e in second.entries}
    assert "weather/rain.flac" not in new_ids and "animals/birds/chirp.ogg" not in new_ids
    for path in ("animals/dog.wav", "long.wav", "machines/engine.mp3"):
        assert new_ids[path] == ids[path]  # ids are stable
    assert min(new_ids["new/siren.flac"], new_ids["chirp-moved.ogg"]) > max(ids.values())  # never reused
    old_row = {e.path: i for i, e in enumerate(first.entries)}
    new_row = {e.path: i for i, e in enumerate(second.entries)}
    np.testing.assert_array_equal(second.embeddings[new_row["chirp-moved.ogg"]],
                                  first.embeddings[old_row["animals/birds/chirp.ogg"]])
    assert not np.allclose(second.embeddings[new_row["animals/dog.wav"]],
                           first.embeddings[old_row["animals/dog.wav"]])
    # A no-op rebuild embeds nothing and leaves exactly one version directory behind.
    calls.clear()
    report = build_index(work, out, model_path, progress=False)
    assert calls == [] and report.unchanged == report.files == len(second)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("v", ".tmp"))) == [report.version]


def test_other_model_is_refused_and_rebuild_reembeds(lib, model_path, tmp_path):
    out = tmp_path / "idx"
    build_index(lib, out, model_path, progress=False)
    other = make_model(tmp_path / "other.pt", seed=7)
    with pytest.raises(ModelMismatchError, match="built with model"):
        TextSearcher(open_index(out), load_model(other))
    before = {e.path: e.id for e in open_index(out).entries}
    with pytest.raises(ModelMismatchError, match="built with another model.*--rebuild"):
        build_index(lib, out, other, progress=False)  # never re-embeds a library silently
    assert {e.path: e.id for e in open_index(out).entries} == before
    report = build_index(lib, out, other, progress=False, rebuild=True)
    assert report.embedded == len(GOOD) and report.unchanged == 0
    index = open_index(out)
    assert {e.path: e.id for e in index.entries} == before  # ids survive a model change
    TextSearcher(index, load_model(other))  # accepted now


def test_failed_pointer_swap_keeps_the_previous_index(lib, model_path, tmp_path, monkeypatch):
    import soundsift.search.store as store

    out = tmp_path / "idx"
    build_index(lib, out, model_path, progress=False)
    before = open_index(out)
    extra = tmp_path / "extra"
    shutil.copytree(lib, extra)
    write_sound(extra / "x.wav", 16000, 1, 0.5, "WAV", None, seed=9)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write_pointer", boom)
    with pytest.raises(KeyboardInterrupt):
        build_index(extra, out, model_path, progress=False)
    after = open_index(out)
    assert after.version_dir == before.version_dir and len(after) == len(before)
    monkeypatch.undo()
    report = build_index(extra, out, model_path, progress=False)
    assert report.files == len(GOOD) + 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("v", ".tmp"))) == [report.version]


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_index
from soundsift.search.build import build_index
build_index({lib!r}, {out!r}, {model!r}, progress=False, chunk_files=2, batch_size=1, rebuild=True)
"""


@pytest.mark.slow
def test_build_killed_midway_leaves_previous_index_intact(lib, model_path, tmp_path):
    out = tmp_path / "idx"
    build_index(lib, out, model_path, progress=False)
    before = open_index(out)
    marker = tmp_path / "embedding-started"
    slow = make_model(tmp_path / "slow.pt", marker=str(marker), delay=30.0)
    script = _KILL_SCRIPT.format(tests=str(HERE), lib=str(lib), out=str(out), model=str(slow))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never started embedding"
            time.sleep(0.05)
        assert any(p.name.startswith(".lock") for p in out.iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    after = open_index(out)
    assert after.version_dir == before.version_dir
    np.testing.assert_array_equal(after.embeddings, before.embeddings)
    assert [e.path for e in after.entries] == [e.path for e in before.entries]
    # The lock died with the process; the next build succeeds and removes any leftovers.
    report = build_index(lib, out, model_path, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("v", ".tmp"))) == [report.version]


def test_index_errors_name_the_problem(lib, model_path, tmp_path):
    with pytest.raises(SearchIndexError, match="not found"):
        open_index(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(SearchIndexError, match="not a soundsift index"):
        open_index(tmp_path / "plain")
    with pytest.raises(SearchIndexError, match="not a soundsift index"):
        build_index(lib, tmp_path / "plain", model_path, progress=False)
    assert (tmp_path / "plain" / "notes.txt").read_text() == "mine"
    with pytest.raises(SearchIndexError, match="audio folder not found"):
        build_index(tmp_path / "nope", tmp_path / "idx", model_path, progress=False)
    out = tmp_path / "idx"
    build_index(lib, out, model_path, progress=False)
    vdir = to_legacy(out)  # a format-1 index lists its entries in the manifest
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["entries"][0]["path"] = "../../etc/passwd"
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SearchIndexError, match="unsafe file path"):
        open_index(out)
    (out / "CURRENT").write_text("../elsewhere\n")
    with pytest.raises(SearchIndexError, match="missing index version"):
        open_index(out)


def test_a_folder_without_audio_is_refused_and_no_index_is_written(lib, model_path, tmp_path, monkeypatch):
    import soundsift.search.build as build_module

    empty = tmp_path / "empty"
    (empty / "docs").mkdir(parents=True)
    (empty / "docs" / "notes.txt").write_text("not audio")
    (empty / ".hidden.wav").write_bytes(b"x")
    loaded = []
    monkeypatch.setattr(build_module, "_load_model", lambda *a: loaded.append(a))
    with pytest.raises(SearchIndexError, match=r"no audio files found in .*empty \(extensions: wav, flac"):
        build_index(empty, tmp_path / "idx", model_path, progress=False)
    assert not (tmp_path / "idx").exists() and loaded == []  # refused before the model loads
    with pytest.raises(SearchIndexError, match="dog.wav: is a file, not a folder"):
        build_index(lib / "animals" / "dog.wav", tmp_path / "idx", model_path, progress=False)
    assert not (tmp_path / "idx").exists()
    monkeypatch.undo()
    # An index whose folder has lost all its audio is left as it was, not emptied.
    work = tmp_path / "sounds"
    shutil.copytree(lib / "animals", work)
    out = tmp_path / "kept"
    before = build_index(work, out, model_path, progress=False)
    for f in [p for p in work.rglob("*") if p.is_file()]:
        f.unlink()
    with pytest.raises(SearchIndexError, match="no audio files found"):
        build_index(work, out, model_path, progress=False)
    index = open_index(out)
    assert index.version_dir.name == before.version and len(index) == before.files == 2


# ------------------------------------------------------------------------------- backends


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_backend_matches_a_naive_sort(monkeypatch):
    import soundsift.search.backends as ib

    rng = np.random.default_rng(0)
    x, q = _unit(rng, 5000, 24), _unit(rng, 7, 24)
    x[10] = x[11]  # a tie: the lower row comes first
    q[0] = x[10]
    naive = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    for block in (ib._BLOCK_FLOATS, 7 * 4096):  # one block, and several merged blocks
        monkeypatch.setattr(ib, "_BLOCK_FLOATS", block)
        scores, rows = ExactIndex(x).search(q, 10)
        np.testing.assert_array_equal(rows, naive)
        np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, naive, axis=1), atol=1e-6)
    assert rows[0, 0] == 10 and rows[0, 1] == 11
    scores, rows = ExactIndex(x).search(q[0], 10)  # a single (D,) query
    assert rows.shape == (1, 10)
    assert ExactIndex(x[:3]).search(q, 10)[1].shape == (7, 3)
    with pytest.raises(ValueError, match="expected"):
        ExactIndex(x).search(np.zeros((2, 5), np.float32), 3)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(approx, exact)]))


@pytest.mark.slow
def test_hnsw_recall_on_10k_random_vectors():
    pytest.importorskip("faiss", reason="the faiss extra is not installed")
    rng = np.random.default_rng(1)
    x, q = _unit(rng, 10_000, 256), _unit(rng, 200, 256)
    _, exact = ExactIndex(x).search(q, 10)
    index = FaissIndex(x, "hnsw")  # default parameters
    scores, approx = index.search(q, 10)
    assert _recall(approx, exact) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert index.search(q[:2], 50)[1].shape == (2, 50)  # efSearch is raised to k


def test_ivf_recall_on_clustered_vectors_and_saved_faiss_index(tmp_path):
    pytest.importorskip("faiss", reason="the faiss extra is not installed")
    rng = np.random.default_rng(2)
    centres = _unit(rng, 50, 64)
    x = centres[rng.integers(0, 50, 5000)] + 0.3 * _unit(rng, 5000, 64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(5000, 100, replace=False)] + 0.05 * _unit(rng, 100, 64)
    _, exact = ExactIndex(x).search(q, 10)
    ivf = FaissIndex(x, "ivf")
    assert _recall(ivf.search(q, 10)[1], exact) >= 0.95
    ivf.save(tmp_path / "ivf.index")
    loaded = FaissIndex.load(tmp_path / "ivf.index", "ivf")
    np.testing.assert_array_equal(loaded.search(q, 10)[1], ivf.search(q, 10)[1])


def test_index_built_with_faiss_is_searched_with_it(lib, model_path, tmp_path):
    pytest.importorskip("faiss", reason="the faiss extra is not installed")
    build_index(lib, tmp_path / "idx", model_path, progress=False, faiss="hnsw")
    index = open_index(tmp_path / "idx", backend="faiss")
    assert index.backend.name == "faiss" and (index.segments[0].directory / "faiss-hnsw.index").is_file()
    exact = open_index(tmp_path / "idx", backend="exact")
    q = load_model(model_path).embed_texts(["rain"])
    assert [h.id for h in index.search_vectors(q, 5)[0]] == [h.id for h in exact.search_vectors(q, 5)[0]]
    with pytest.raises(ValueError, match="unknown search backend"):
        open_index(tmp_path / "idx", backend="annoy")


def test_auto_backend_switches_to_stored_faiss_above_the_limit(lib, model_path, tmp_path, monkeypatch):
    pytest.importorskip("faiss", reason="the faiss extra is not installed")
    import soundsift.search.segments as ib  # the segment writer decides on FAISS
    import soundsift.search.sound_index as si

    monkeypatch.setattr(si, "EXACT_LIMIT", 3)
    monkeypatch.setattr(ib, "EXACT_LIMIT", 3)
    build_index(lib, tmp_path / "idx", model_path, progress=False)  # faiss="auto"
    index = open_index(tmp_path / "idx")
    stored = index.segments[0].faiss
    assert index.backend.name == "faiss" and stored["kind"] == si.AUTO_FAISS_KIND
    assert (index.segments[0].directory / stored["file"]).is_file()
    monkeypatch.setattr(si, "EXACT_LIMIT", 100)
    assert open_index(tmp_path / "idx").backend.name == "exact"
