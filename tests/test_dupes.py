"""Near-duplicates: ``find_duplicates`` against a naive all-pairs grouping on random vectors, hand cases,
generated variants of sounds (re-encoded, resampled, trimmed, level-changed, copied) through a real
index with windows, ``soundsift index dupes`` (text and JSON), and ``/api/duplicates/{id}``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import ConfigError  # noqa: E402
from soundsift.search.backends import ExactIndex  # noqa: E402
from soundsift.search.build import build_index  # noqa: E402
from soundsift.search.dupes import DuplicateLookup, find_duplicates  # noqa: E402
from soundsift.search.index import IndexEntry, open_index  # noqa: E402
from test_index import make_model  # noqa: E402


class FakeIndex(SimpleNamespace):
    """What ``find_duplicates`` reads of a SoundIndex: entries, embeddings, backend, get, len."""

    def __len__(self) -> int:
        return len(self.entries)


def make_fake(vectors: np.ndarray, hashes: list[str], durations=None) -> FakeIndex:
    durations = [1.0] * len(hashes) if durations is None else durations
    entries = [IndexEntry(id=100 + i, path=f"f{i}.wav", size=1, mtime_ns=0, sha256=h, duration=float(d))
               for i, (h, d) in enumerate(zip(hashes, durations))]
    by_id = {e.id: e for e in entries}
    return FakeIndex(entries=entries, embeddings=vectors, backend=ExactIndex(vectors), get=by_id.get)


def naive_linked(unit, hashes, durations, i, j, threshold, change) -> bool:
    """Same hash, or cosine >= threshold with durations within ``change`` of the longer one."""
    if hashes[i] and hashes[i] == hashes[j]:
        return True
    longer = max(durations[i], durations[j])
    return float(unit[i] @ unit[j]) >= threshold and abs(durations[i] - durations[j]) <= change * longer + 1e-9


def naive_groups(vectors: np.ndarray, hashes: list[str], threshold: float, durations, change: float):
    """Connected components of ``naive_linked``, every pair checked, by graph search."""
    n = len(vectors)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    linked = [[j for j in range(n) if j != i and naive_linked(unit, hashes, durations, i, j, threshold, change)]
              for i in range(n)]
    seen, groups = set(), set()
    for i in range(n):
        if i in seen:
            continue
        stack, comp = [i], set()
        while stack:
            x = stack.pop()
            if x not in comp:
                comp.add(x)
                stack.extend(linked[x])
        seen |= comp
        if len(comp) > 1:
            groups.add(frozenset(comp))
    return groups


def clustered(rng, n_sounds: int, copies: int, dim: int, noise: float) -> np.ndarray:
    base = rng.standard_normal((n_sounds, dim))
    vecs = np.repeat(base, copies, axis=0) + noise * rng.standard_normal((n_sounds * copies, dim))
    vecs = vecs[rng.permutation(len(vecs))]
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)


class NeighbourBackend:
    """An approximate-search stand-in (not "exact"): the kNN path that FAISS indexes take."""

    name = "hnsw"

    def __init__(self, vectors: np.ndarray) -> None:
        self.exact = ExactIndex(vectors)

    def search(self, queries, k):
        return self.exact.search(queries, k)


@pytest.mark.parametrize("seed, path", [(s, p) for s in range(3) for p in ("exact", "neighbours")])
def test_groups_match_a_naive_all_pairs_grouping(seed, path, monkeypatch):
    import soundsift.search.dupes as dupes

    monkeypatch.setattr(dupes, "_BATCH", 7)  # several backend calls, a ragged last one
    monkeypatch.setattr(dupes, "_BLOCK_FLOATS", 48)  # blocks of 16 rows: three in the exact pass
    rng = np.random.default_rng(seed)
    vecs = clustered(rng, 12, 4, 16, noise=0.35)
    hashes = [f"h{rng.integers(0, 40)}" if rng.random() < 0.5 else "" for _ in range(len(vecs))]
    durations = rng.choice([1.0, 1.04, 1.1, 1.5, 3.0], len(vecs))
    index = make_fake(vecs, hashes, durations)
    if path == "neighbours":
        index.backend = NeighbourBackend(vecs)
    for threshold in (0.5, 0.8, 0.9, 0.97):
        for change in (0.0, 0.05, 0.1, 1.0):
            got = {frozenset(int(m.id) - 100 for m in g.members)
                   for g in find_duplicates(index, threshold, neighbours=len(vecs), max_duration_change=change)}
            assert got == naive_groups(vecs, hashes, threshold, durations, change), (threshold, change)


def test_group_fields_by_hand():
    v = np.array([[1, 0, 0], [0.96, 0.28, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float32)  # 2, 3 near; 4 = 5
    hashes = ["a", "b", "c", "d", "d"]
    groups = find_duplicates(make_fake(v, hashes), 0.95)
    assert [g.kind for g in groups] == ["near", "identical"]  # same size: by the first path
    near, same = groups
    assert [m.path for m in same.members] == ["f3.wav", "f4.wav"]
    assert [m.identical for m in same.members] == [True, True] and same.members[1].similarity == pytest.approx(1.0)
    assert {m.path for m in near.members} == {"f0.wav", "f1.wav"}
    assert near.members[1].similarity == pytest.approx(0.96) and not near.members[1].identical
    assert near.to_dict()["members"][1] == {"id": near.members[1].id, "path": near.members[1].path,
                                            "duration": 1.0, "similarity": 0.96, "identical": False}
    assert find_duplicates(make_fake(v, hashes), 0.97)[0].kind == "identical"  # 0.96 < 0.97: only the copy
    assert len(find_duplicates(make_fake(v, [""] * 5), 0.97)) == 1  # no hashes: the equal vectors still pair
    # Durations: 1.0 and 1.12 differ by 10.7% of the longer: near at 0.11, not at 0.1 (the default).
    assert len(find_duplicates(make_fake(v, [""] * 5, [1.0, 1.12, 1, 1, 1]), 0.95)) == 1
    assert len(find_duplicates(make_fake(v, [""] * 5, [1.0, 1.12, 1, 1, 1]), 0.95, max_duration_change=0.11)) == 2
    assert len(find_duplicates(make_fake(v, hashes, [1, 1, 1, 1, 9]), 0.95)) == 2  # one hash: always together
    assert find_duplicates(make_fake(np.zeros((0, 3), np.float32), []), 0.9) == []  # an empty index
    assert find_duplicates(make_fake(v[:1], ["a"]), -1.0) == []  # one file: no pair, not even with itself
    for bad in (1.5, -2.0, float("nan")):
        with pytest.raises(ConfigError, match="threshold"):
            find_duplicates(make_fake(v, hashes), bad)
        with pytest.raises(ConfigError, match="duration"):
            find_duplicates(make_fake(v, hashes), 0.9, max_duration_change=bad)


def test_lookup_of_one_file_matches_its_group():
    rng = np.random.default_rng(7)
    vecs = clustered(rng, 8, 3, 16, noise=0.2)
    hashes = [f"h{i}" for i in range(len(vecs))]
    hashes[5] = hashes[9]  # one identical pair, whatever their vectors
    durations = rng.choice([2.0, 2.1, 2.5], len(vecs))
    index = make_fake(vecs, hashes, durations)
    lookup = DuplicateLookup(index)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for row, e in enumerate(index.entries):
        got = lookup.of(e.id, 0.9)
        want = {r for r in range(len(vecs)) if r != row and naive_linked(unit, hashes, durations, row, r, 0.9, 0.1)}
        assert {m.id - 100 for m in got} == want
        assert [m.identical for m in got] == sorted((m.identical for m in got), reverse=True)
        assert all(m.id != e.id for m in got)


# ------------------------------------------------------------------------- generated variants, end to end

RATE = 16000


def sound(kind: int, seconds: float) -> np.ndarray:
    """Distinct generated sounds: tones, a chirp, noise bands, clicks."""
    t = np.arange(int(RATE * seconds)) / RATE
    rng = np.random.default_rng(kind)
    if kind < 3:
        return 0.3 * np.sin(2 * np.pi * (300 + 900 * kind) * t)
    if kind == 3:
        return 0.3 * np.sin(2 * np.pi * (200 + 1500 * t / seconds) * t)
    if kind == 4:
        from scipy.signal import butter, sosfilt

        return 0.3 * sosfilt(butter(4, [3000, 6000], "bandpass", fs=RATE, output="sos"), rng.standard_normal(len(t)))
    clicks = np.zeros(len(t))
    clicks[:: RATE // 8] = 0.9
    return clicks + 0.01 * rng.standard_normal(len(t))


def write_variants(lib: Path, name: str, wave: np.ndarray) -> list[str]:
    import soxr

    n = len(wave)
    files = {
        f"{name}.wav": (wave, RATE, "WAV"),
        f"re-encoded/{name}.flac": (wave, RATE, "FLAC"),
        f"re-encoded/{name}.ogg": (wave, RATE, "OGG"),
        f"resampled/{name}.wav": (soxr.resample(wave, RATE, 22050), 22050, "WAV"),
        f"trimmed/{name}.wav": (wave[int(0.03 * n): n - int(0.02 * n)], RATE, "WAV"),
        f"quieter/{name}.wav": (wave * 0.3, RATE, "WAV"),
    }
    for rel, (w, r, fmt) in files.items():
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(lib / rel), w.astype(np.float32), r, format=fmt)
    (lib / "copies").mkdir(exist_ok=True)
    shutil.copyfile(lib / f"{name}.wav", lib / f"copies/{name}.wav")
    return [*files, f"copies/{name}.wav"]


@pytest.fixture(scope="module")
def variant_index(tmp_path_factory):
    base = tmp_path_factory.mktemp("dupes")
    lib = base / "sounds"
    owner = {}
    for kind in range(6):
        seconds = 12.0 if kind == 3 else 1.5  # one long file: indexed with windows too
        for rel in write_variants(lib, f"sound{kind}", sound(kind, seconds)):
            owner[rel] = kind
    build_index(lib, base / "idx", make_model(base / "model.pt"), progress=False, window=4.0, hop=2.0)
    index = open_index(base / "idx")
    assert index.windows is not None and len(index.windows) > 0  # the long file's windows exist
    return base, index, owner


def test_generated_variants_group_by_sound(variant_index):
    _, index, owner = variant_index
    emb = np.asarray(index.embeddings)
    sims = emb @ emb.T
    same = np.array([[owner[a.path] == owner[b.path] for b in index.entries] for a in index.entries])
    low, high = sims[same].min(), sims[~same].max()
    assert low > high, (low, high)  # the test model separates them: then the grouping must be exact
    groups = find_duplicates(index, float((low + high) / 2))
    want = {frozenset(p for p, k in owner.items() if k == kind) for kind in range(6)}
    assert {frozenset(m.path for m in g.members) for g in groups} == want
    assert all(g.kind == "near" and len(g.members) == 7 for g in groups)
    for g in groups:  # the byte copy is marked identical to the original, or neither is the anchor
        copies = {m.path for m in g.members if m.identical}
        assert len(copies) == 2 and all(p.endswith(".wav") and "sound" in p for p in copies)
        assert copies == {p for p in copies if p.startswith("copies/") or "/" not in p}
    # At 1.0 only copies are left: the byte copies (identical) and variants the test model cannot tell
    # apart at all (a steady tone, trimmed); the long file with its windows is never a duplicate of itself (each path once, overall).
    strict = find_duplicates(index, 1.0)
    paths = [m.path for g in strict for m in g.members]
    assert len(paths) == len(set(paths))
    assert {frozenset({f"sound{k}.wav", f"copies/sound{k}.wav"}) for k in range(6)} == {
        frozenset(m.path for m in g.members if m.identical) for g in strict}
    assert all(m.identical or m.similarity >= 1.0 - 1e-6 for g in strict for m in g.members), strict


def test_a_faiss_backend_finds_the_same_groups(variant_index):
    """Above 100k files the index searches with FAISS: the neighbour path, on a real FAISS index here."""
    pytest.importorskip("faiss", reason="the faiss extra is not installed")
    base, index, _ = variant_index
    hnsw = open_index(base / "idx", backend="hnsw")
    assert hnsw.backend.name != "exact"
    for threshold in (0.5, 0.9, 0.99):
        exact = {frozenset(m.path for m in g.members) for g in find_duplicates(index, threshold)}
        assert {frozenset(m.path for m in g.members) for g in find_duplicates(hnsw, threshold)} == exact


def test_index_dupes_cli_text_and_json(variant_index, capsys):
    base, index, owner = variant_index
    threshold = 0.999999
    assert main(["index", "dupes", str(base / "idx"), "--threshold", str(threshold), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [g.to_dict() for g in find_duplicates(index, threshold)]
    assert main(["index", "dupes", str(base / "idx"), "--threshold", "-1", "--max-duration-change", "1"]) == 0
    out = capsys.readouterr().out.splitlines()  # every neighbour pair links: one group
    assert out[0] == ("1 group in 42 files: 0 of identical files, 1 of near-duplicates (cosine >= -1.0, durations "
                      "within 100%)")
    assert out[1] == "near-duplicates, 42 files:" and len(out) == 44
    assert sum("(identical content to another file listed here)" in line for line in out) == 12
    assert main(["index", "dupes", str(base / "idx"), "--threshold", "-1"]) == 0  # the 12-s sound apart
    assert capsys.readouterr().out.startswith("2 groups in 42 files")
    assert main(["index", "dupes", str(base / "no such index")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such index" in err[0] and "index build" in err[0]
    for option, value in (("--threshold", "1.5"), ("--max-duration-change", "-0.1")):
        assert main(["index", "dupes", str(base / "idx"), option, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{option} {value}" in err[0]


def test_api_duplicates_of_a_sound(variant_index):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from soundsift.search.access import AccessPolicy
    from soundsift.search.server import create_app

    base, index, owner = variant_index
    client = TestClient(create_app(base / "idx"))
    entry = next(e for e in index.entries if e.path == "sound2.wav")
    r = client.get(f"/api/duplicates/{entry.id}", params={"threshold": 1.0})
    assert r.status_code == 200
    assert [(m["path"], m["identical"]) for m in r.json()] == [("copies/sound2.wav", True)]
    r = client.get(f"/api/duplicates/{entry.id}", params={"threshold": 0.0})
    assert {m["path"] for m in r.json()} >= {p for p, k in owner.items() if k == 2} - {"sound2.wav"}
    assert r.json() == [m.to_dict() for m in DuplicateLookup(index).of(entry.id, 0.0)]
    for bad in ("../../etc/passwd", "-1", "99999", "1e3"):
        assert client.get(f"/api/duplicates/{bad}").status_code in (404, 422), bad
    assert client.get(f"/api/duplicates/{entry.id}", params={"threshold": 2}).status_code == 422
    locked = TestClient(create_app(base / "idx", access=AccessPolicy(token="dupes-token-123")))
    assert locked.get(f"/api/duplicates/{entry.id}").status_code == 401
