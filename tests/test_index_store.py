"""Index format 2: segments, deletions and compaction. An incremental update (a full scan, or given
paths only) equals a full rebuild; a build killed mid-append leaves the previous version searchable; the
live-row view and the masked search agree with naive references; format 1 is read and migrated once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soundsift.checkpoints import load_model  # noqa: E402
from soundsift.search.backends import ExactIndex  # noqa: E402
from soundsift.search.build import build_index, update_index  # noqa: E402
from soundsift.search.changes import merge_plan  # noqa: E402
from soundsift.search.index import open_index  # noqa: E402
from soundsift.search.live import Parted, PartedBackend, RowView, masked_search  # noqa: E402
from test_index import HERE, _touch_later, make_library, make_model, to_legacy, write_sound  # noqa: E402

QUERIES = ["a dog barking", "rain on a roof", "engine", "thunder storm", "birds chirping"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "model.pt")


def _state(out: Path, model_path: Path, backend: str = "exact") -> dict:
    """What an index holds and answers, by path (ids and row order may differ between builds)."""
    index = open_index(out, backend=backend)
    entries = {e.path: (e.size, e.mtime_ns, e.sha256, e.duration) for e in index.entries}
    vectors = {e.path: np.asarray(index.embeddings[i]) for i, e in enumerate(index.entries)}
    thumbs = {e.path: np.asarray(index.thumbnails[i]) for i, e in enumerate(index.entries)}
    model = load_model(model_path)
    q = model.embed_texts(QUERIES)
    results = [[(h.path, round(h.score, 5), h.start, h.end) for h in hits]
               for hits in index.search_vectors(q, k=len(index))]
    windows = 0 if index.windows is None else len(index.windows)
    return {"entries": entries, "vectors": vectors, "thumbs": thumbs, "results": results, "windows": windows}


def _assert_same(a: dict, b: dict) -> None:
    assert a["entries"] == b["entries"]
    assert a["windows"] == b["windows"]
    for path in a["vectors"]:
        np.testing.assert_allclose(a["vectors"][path], b["vectors"][path], atol=1e-6)
        np.testing.assert_array_equal(a["thumbs"][path], b["thumbs"][path])
    assert a["results"] == b["results"]


def _change(work: Path, step: int) -> list[str]:
    """One round of changes to the library; the relative paths touched."""
    touched = [f"new/s{step}.flac", "animals/dog.wav"]
    write_sound(work / touched[0], 32000, 1, 0.4 + 0.1 * step, "FLAC", None, seed=100 + step)
    write_sound(work / "animals/dog.wav", 16000, 1, 1.0, "WAV", None, seed=200 + step)
    _touch_later(work / "animals/dog.wav")
    if step == 1:
        (work / "weather/rain.flac").unlink()
        (work / "animals/birds/chirp.ogg").rename(work / "chirp-moved.ogg")
        touched += ["weather/rain.flac", "animals/birds/chirp.ogg", "chirp-moved.ogg"]
    if step == 3:
        shutil.rmtree(work / "new")  # a whole folder goes
        touched += ["new"]
    return touched


def test_incremental_updates_equal_a_full_rebuild(tmp_path, model_path):
    """Rounds of adds, changes, moves and deletes, applied by a full scan (index A) and by the touched
    paths only (index B), then compared with an index built from scratch: the same items, embeddings,
    thumbnails, windows and search results; segments stay few (merged)."""
    work = make_library(tmp_path / "sounds")
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        build_index(work, out, model_path, progress=False, window=4.0, hop=2.0)
    for step in range(5):
        touched = _change(work, step)
        report_a = build_index(work, a, model_path, progress=False, window=4.0, hop=2.0)
        report_b = update_index(b, touched, progress=False)
        assert (report_b.added, report_b.updated, report_b.removed) == (report_a.added, report_a.updated,
                                                                        report_a.removed)
        fresh = tmp_path / f"fresh{step}"
        build_index(work, fresh, model_path, progress=False, window=4.0, hop=2.0)
        want = _state(fresh, model_path)
        _assert_same(_state(a, model_path), want)
        _assert_same(_state(b, model_path), want)
        assert report_a.segments <= 3 and report_b.segments <= 3
    # the update wrote only the changed rows: its segment holds the new file and the changed dog
    assert report_a.embedded == 2 and report_a.unchanged == report_a.files - 2
    # nothing is left of replaced segments and versions
    index = open_index(a)
    assert sorted(p.name for p in (a / "segments").iterdir()) == sorted(s.name for s in index.segments)
    assert [p.name for p in a.iterdir() if p.name.startswith("v")] == [index.version_dir.name]


def test_ids_are_stable_and_never_reused_across_segments(tmp_path, model_path):
    work = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    build_index(work, out, model_path, progress=False)
    before = {e.path: e.id for e in open_index(out).entries}
    update_index(out, _change(work, 1), progress=False)
    after = {e.path: e.id for e in open_index(out).entries}
    for path in set(before) & set(after):
        assert after[path] == before[path]
    new = set(after) - set(before)
    assert new and min(after[p] for p in new) > max(before.values())
    index = open_index(out)
    for path, i in after.items():  # lookups by id across segments
        assert index.get(i).path == path
        np.testing.assert_array_equal(index.vector(i), index.embeddings[[e.id for e in index.entries].index(i)])
    assert index.get(max(before.values()) + 1000) is None


def test_merge_plan_keeps_segments_logarithmic():
    assert merge_plan([1_000_000, 10], [1_000_000, 10]) == 0
    assert merge_plan([1_000_000, 10, 10], [1_000_000, 10, 10]) == 2
    assert merge_plan([100, 30, 10], [100, 30, 10]) == 3  # 100 <= 4 * 40
    assert merge_plan([1000, 100], [1000, 1000]) == 1  # mostly deleted: rewritten alone
    assert merge_plan([100, 1000, 10], [1000, 1000, 10]) == 3  # and all after it
    assert merge_plan([10, 1000], [10, 1000]) == 2
    assert merge_plan([50], [100]) == 1  # a lone segment, half deleted
    assert merge_plan([90], [100]) == 0
    # simulate 1000 appends of 10 rows: a few segments, each row rewritten a few times
    sizes, rewritten = [100_000], 0
    for _ in range(1000):
        sizes.append(10)
        m = merge_plan(sizes, sizes)
        if m >= 2:
            rewritten += sum(sizes[-m:])
            sizes[-m:] = [sum(sizes[-m:])]
        assert len(sizes) <= 8  # about log base MERGE_FACTOR of the appended rows
    assert rewritten <= 10 * 10_000  # each appended row rewritten at most ~10 times


def _naive_top(vectors: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> list[list[int]]:
    out = []
    for qi in range(len(q)):
        scored = sorted((-float(vectors[r] @ q[qi]), r) for r in range(len(vectors)) if allowed[r])
        out.append([r for _, r in scored[:k]])
    return out


def test_parted_view_and_masked_search_match_naive_references():
    rng = np.random.default_rng(0)
    sizes = [50, 7, 0, 30]
    arrays = [rng.standard_normal((n, 8)).astype(np.float32) for n in sizes]
    deleted = [np.array([0, 5, 49]), None, None, np.arange(0, 30, 3)]
    keeps = [None if d is None else np.setdiff1d(np.arange(n), d) for n, d in zip(sizes, deleted)]
    parted = Parted(sizes, keeps)
    live = np.concatenate([a if k is None else a[k] for a, k in zip(arrays, keeps)])
    view = RowView(parted, arrays)
    assert view.shape == live.shape == (len(parted), 8)
    np.testing.assert_array_equal(np.asarray(view), live)
    for i in (0, 1, 46, len(live) - 1, -1):
        np.testing.assert_array_equal(view[i], live[i])
    picks = rng.integers(0, len(live), 20)
    np.testing.assert_array_equal(view[picks], live[picks])
    np.testing.assert_array_equal(view[10:60], live[10:60])
    q = rng.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(view @ q[0], live @ q[0], rtol=1e-5, atol=1e-5)
    backend = PartedBackend(parted, arrays, [ExactIndex(a) for a in arrays], 8)
    everything = np.ones(len(live), bool)
    for allowed in (None, rng.random(len(live)) < 0.5, rng.random(len(live)) < 0.05, ~everything):
        mask = everything if allowed is None else allowed
        for k in (1, 5, 200):
            scores, rows = backend.restricted(allowed).search(q, k)
            want = _naive_top(live, q, mask, k)
            assert rows.tolist() == want
            for qi in range(len(q)):
                np.testing.assert_allclose(scores[qi], live[rows[qi]] @ q[qi], rtol=1e-5, atol=1e-5)
    # one part alone, every branch: few excluded (a top-(k + excluded) scan), most excluded (a scan of
    # the allowed rows), an approximate backend (fetches until k are allowed)
    vectors = rng.standard_normal((400, 8)).astype(np.float32)

    class Approximate(ExactIndex):  # takes the fetch-until-k-allowed path; exact underneath
        name = "faiss"

    for frac in (0.9, 0.1, 0.01):
        mask = rng.random(len(vectors)) < frac
        for backend in (ExactIndex(vectors), Approximate(vectors)):
            _, rows = masked_search(backend, vectors, q, 4, mask)
            assert rows.tolist() == _naive_top(vectors, q, mask, 4)


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_index  # registers the tiny encoders
import soundsift.search.segments as segments
from soundsift.search.build import update_index
real = segments.save_npy
def slow(path, array):
    n = real(path, array)
    if Path(path).name == "embeddings.npy":
        Path({marker!r}).touch()
        time.sleep(60)
    return n
segments.save_npy = slow
update_index({out!r}, {paths!r}, progress=False)
"""


@pytest.mark.slow
def test_update_killed_mid_append_leaves_the_previous_version_searchable(tmp_path, model_path):
    work = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    build_index(work, out, model_path, progress=False)
    before = _state(out, model_path)
    version = open_index(out).version_dir.name
    touched = _change(work, 0)
    marker = tmp_path / "appending"
    script = _KILL_SCRIPT.format(tests=str(HERE), marker=str(marker), out=str(out), paths=touched)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the update never started writing its segment"
            time.sleep(0.05)
        assert any(p.name.startswith(".tmp-") for p in (out / "segments").iterdir())  # half a segment
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert open_index(out).version_dir.name == version
    _assert_same(_state(out, model_path), before)
    report = update_index(out, touched, progress=False)  # the next update succeeds and cleans up
    assert report.added == 1 and report.updated == 1
    assert not any(p.name.startswith(".tmp-") for p in (out / "segments").iterdir())
    fresh = tmp_path / "fresh"
    build_index(work, fresh, model_path, progress=False)
    _assert_same(_state(out, model_path), _state(fresh, model_path))


def test_a_format_1_index_is_read_and_migrated_once(tmp_path, model_path):
    work = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    build_index(work, out, model_path, progress=False, window=4.0, hop=2.0)
    want = _state(out, model_path)
    to_legacy(out)
    assert json.loads((open_index(out).version_dir / "manifest.json").read_text())["version"] == 1
    _assert_same(_state(out, model_path), want)  # read as it is
    with pytest.warns(UserWarning, match="format 1.*migrated once") as caught:
        report = build_index(work, out, model_path, progress=False, window=4.0, hop=2.0)
    assert len(caught) == 1 and report.embedded == 0
    index = open_index(out)
    assert index.manifest["version"] == 2 and len(index.segments) == 1
    _assert_same(_state(out, model_path), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_index(work, out, model_path, progress=False, window=4.0, hop=2.0)  # no second migration


def test_the_cli_says_the_migration_in_one_line(tmp_path, model_path, capsys):
    from soundsift.cli.main import main

    work = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    build_index(work, out, model_path, progress=False)
    to_legacy(out)
    assert main(["index", "build", str(work), "--model", str(model_path), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "format 1" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "migrated once" in lines[0]
    assert open_index(out).manifest["version"] == 2
