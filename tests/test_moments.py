"""Moments in long recordings: window spans, merged moments, and search results with start/end
through the Python API, the CLI and /api/search (a tiny random model: plumbing, not quality)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import ConfigError  # noqa: E402
from soundsift.search.api import open_index  # noqa: E402
from soundsift.search.build import build_index  # noqa: E402
from soundsift.search.moments import (  # noqa: E402
    check_windows,
    format_span,
    merge_moments,
    parse_moment_spec,
    temporal_iou,
    window_spans,
)
from test_index import make_model  # noqa: E402

RATE = 16000


# ------------------------------------------------------------------------------------------ windows


@pytest.mark.parametrize("n,window,hop", [(100, 30, 10), (101, 30, 15), (90, 30, 30), (31, 30, 7), (7919, 1000, 333)])
def test_windows_cover_the_file_and_the_last_ends_at_its_end(n, window, hop):
    spans = window_spans(n, window, hop)
    covered = np.zeros(n, bool)
    for a, b in spans:
        assert b - a == window and 0 <= a < b <= n
        covered[a:b] = True
    assert covered.all() and spans[-1][1] == n and spans[0][0] == 0
    assert np.all(np.diff(spans[:, 0]) > 0) and np.all(np.diff(spans[:-1, 0]) == hop)
    naive = [s for s in range(0, n, hop) if s + window < n] + [n - window]  # independent reference
    assert spans[:, 0].tolist() == naive


def test_short_files_and_window_zero_have_no_windows():
    assert len(window_spans(30, 30, 10)) == 0 and len(window_spans(10, 30, 10)) == 0
    assert len(window_spans(1000, 0, 0)) == 0
    assert window_spans(100, 30, 10)[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60, 70]


def test_window_options_are_checked():
    assert check_windows(10, None, 10.0) == (10.0, 5.0)
    assert check_windows(0, None, None) == (0.0, 0.0)
    with pytest.raises(ConfigError, match="--window 12.0: longer than the model's input of 10 s"):
        check_windows(12.0, None, 10.0)
    for window, hop in ((-1.0, None), (4.0, 5.0), (4.0, 0.0)):
        with pytest.raises(ConfigError, match=r"^--(window|hop) "):
            check_windows(window, hop, None)


# ------------------------------------------------------------------------------------------ moments


def test_merged_moments_hand_worked():
    # windows of 4 s every 2 s over 14 s; best 1.0 -> threshold 0.9
    spans = np.array([[0, 4], [2, 6], [4, 8], [6, 10], [8, 12], [10, 14]], float)
    scores = np.array([0.2, 0.95, 1.0, 0.5, 0.92, 0.1])
    moments = merge_moments(spans, scores, ratio=0.9)
    assert [(m.start, m.end, m.score) for m in moments] == [(2.0, 8.0, 1.0), (8.0, 12.0, 0.92)]
    # negative best: threshold -0.5 - 0.1 * 0.5 = -0.55
    moments = merge_moments(spans, np.array([-0.5, -0.54, -0.56, -0.9, -0.55, -0.6]), ratio=0.9)
    assert [(m.start, m.end) for m in moments] == [(0.0, 6.0), (8.0, 12.0)]


def test_nms_drops_a_moment_overlapping_a_better_one():
    spans = np.array([[0, 10], [5, 15], [6, 16]], float)  # the last window aligned to the end
    moments = merge_moments(spans, np.array([1.0, 0.0, 0.95]), ratio=0.9)
    assert [(m.start, m.end) for m in moments] == [(0.0, 10.0), (6.0, 16.0)]  # IoU 4/16 < 0.5: both kept
    assert temporal_iou((0, 10), (6, 16)) == pytest.approx(4 / 16)
    spans = np.array([[0, 10], [1, 11], [2, 12]], float)  # runs (0, 10) and (2, 12): IoU 8/12
    assert [(m.start, m.end) for m in merge_moments(spans, np.array([1.0, 0.0, 0.95]), ratio=0.9)] == [(0.0, 10.0)]
    # the peak rule drops them the same way
    assert [(m.start, m.end) for m in merge_moments(spans, np.array([1.0, 0.0, 0.95]), level=0.3)] == [(0.0, 10.0)]


def naive_moments(spans, scores, ratio, nms_iou):
    """Reference: label each window in/out, cut the label sequence at every change, then greedy NMS."""
    best = max(scores)
    inside = [s >= best - (1 - ratio) * abs(best) for s in scores]
    runs, i = [], 0
    while i < len(scores):
        j = i
        while j < len(scores) and inside[j] == inside[i]:
            j += 1
        if inside[i]:
            runs.append((spans[i][0], spans[j - 1][1], max(scores[i:j])))
        i = j
    runs.sort(key=lambda r: (-r[2], r[0]))
    return [(a, b, round(s, 6)) for a, b, s in naive_nms(runs, nms_iou)]


def naive_nms(runs, nms_iou):
    """Greedy NMS over runs (start, end, ...) already in order of preference."""
    kept = []
    for r in runs:
        ok = True
        for o in kept:
            inter = max(0.0, min(r[1], o[1]) - max(r[0], o[0]))
            ok &= inter / (max(r[1], o[1]) - min(r[0], o[0])) < nms_iou
        if ok:
            kept.append(r)
    return kept


def random_windows(rng) -> np.ndarray:
    """1 to 29 windows of 2-7 s every 1-2 s, in seconds: (W, 2)."""
    n = int(rng.integers(1, 30))
    window, hop = float(rng.integers(2, 8)), float(rng.integers(1, 3))
    return np.array([[i * hop, i * hop + window] for i in range(n)])


def test_merged_moments_match_a_naive_reference_on_random_scores():
    rng = np.random.default_rng(0)
    for _ in range(300):
        spans = random_windows(rng)
        scores = rng.uniform(-1, 1, len(spans))
        ratio, iou = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.1, 0.9))
        got = [(m.start, m.end, m.score) for m in merge_moments(spans, scores, ratio, iou)]
        assert got == naive_moments(spans.tolist(), scores.tolist(), ratio, iou)


def test_peak_moments_hand_worked():
    # windows of 2 s every 1 s over 11 s; median 0.2 (scores sorted: 0, 0, 0.1, 0.2, 0.2, 0.2, 0.4, 0.5, 0.8, 1.0)
    spans = np.array([[i, i + 2] for i in range(10)], float)
    scores = np.array([0.0, 0.2, 0.5, 1.0, 0.4, 0.2, 0.0, 0.8, 0.2, 0.1])
    # peak 1.0 at window 3: threshold 0.2 + 0.3 * 0.8 = 0.44 -> windows 2..3 -> 2 s to 5 s
    # peak 0.8 at window 7: threshold 0.2 + 0.3 * 0.6 = 0.38 -> window 7 alone -> 7 s to 9 s
    # window 1 (0.2) is a local maximum? no: 0.2 < 0.5; nothing else lies above the median
    got = [(m.start, m.end, m.score) for m in merge_moments(spans, scores, level=0.3)]
    assert got == [(2.0, 5.0, 1.0), (7.0, 9.0, 0.8)]
    # level 0: a moment runs down to the median on both sides: peak 1.0 -> windows 1..5 (>= 0.2)
    got = [(m.start, m.end) for m in merge_moments(spans, scores, level=0.0)]
    assert got[0] == (1.0, 7.0)
    # level 1: the peak window alone
    assert [(m.start, m.end) for m in merge_moments(spans, scores, level=1.0)] == [(3.0, 5.0), (7.0, 9.0)]
    assert [(m.start, m.end) for m in merge_moments(spans, scores, level=0.3, limit=1)] == [(2.0, 5.0)]
    # every score equal: the whole file, once
    assert [(m.start, m.end) for m in merge_moments(spans, np.ones(10), level=0.3)] == [(0.0, 11.0)]
    # the default for 2-s windows: the peak rule at level 0.1: peak 1.0 -> threshold 0.28 -> windows 2..4;
    # peak 0.8 -> threshold 0.26 -> window 7 alone
    assert [(m.start, m.end) for m in merge_moments(spans, scores)] == [(2.0, 6.0), (7.0, 9.0)]
    # the default for windows of 4 s or more: the ratio rule at 0.9
    long = spans * 2
    assert merge_moments(long, scores) == merge_moments(long, scores, ratio=0.9)
    assert merge_moments(long, scores) != merge_moments(long, scores, level=0.1)
    with pytest.raises(ConfigError, match="level 1.5"):
        merge_moments(spans, scores, level=1.5)


def naive_peak_moments(spans, scores, level, nms_iou):
    """Reference: for each window that no neighbour beats and that lies above the median, walk out
    while the neighbours stay above its threshold; order by score then position; greedy NMS."""
    n = len(scores)
    floor = sorted(scores)[n // 2] if n % 2 else (sorted(scores)[n // 2 - 1] + sorted(scores)[n // 2]) / 2
    cands = []
    for i in range(n):
        left = scores[i - 1] if i > 0 else -np.inf
        right = scores[i + 1] if i < n - 1 else -np.inf
        if scores[i] >= left and scores[i] >= right and scores[i] > floor:
            cands.append(i)
    if not cands:
        cands = [scores.index(max(scores))]
    runs = []
    for i in cands:
        t = min(scores[i], floor + level * (scores[i] - floor))
        a = i
        while a - 1 >= 0 and scores[a - 1] >= t:
            a -= 1
        b = i
        while b + 1 < n and scores[b + 1] >= t:
            b += 1
        runs.append((spans[a][0], spans[b][1], round(scores[i], 6), i))
    runs.sort(key=lambda r: (-r[2], r[3]))
    return [r[:3] for r in naive_nms(runs, nms_iou)]


def test_peak_moments_match_a_naive_reference_on_random_scores():
    rng = np.random.default_rng(1)
    for _ in range(300):
        spans = random_windows(rng)
        scores = np.round(rng.uniform(-1, 1, len(spans)), 1)  # rounded: ties and plateaus happen
        level, iou = float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.1, 0.9))
        got = [(m.start, m.end, m.score) for m in merge_moments(spans, scores, nms_iou=iou, level=level)]
        assert got == naive_peak_moments(spans.tolist(), scores.tolist(), level, iou)
        limit = int(rng.integers(1, 4))
        assert merge_moments(spans, scores, nms_iou=iou, level=level, limit=limit) == \
            merge_moments(spans, scores, nms_iou=iou, level=level)[:limit]


def test_moment_spec_and_span_format(tmp_path):
    assert parse_moment_spec("a/b.wav@12.5-20") == ("a/b.wav", 12.5, 20.0)
    assert parse_moment_spec("a/b.wav") == ("a/b.wav", None, None)
    odd = tmp_path / "x@1-2"
    odd.write_bytes(b"")
    assert parse_moment_spec(str(odd)) == (str(odd), None, None)  # an existing name with '@' is a file
    assert format_span(65.2, 130.1) == "01:05-02:11" and format_span(0, 9.5) == "00:00-00:10"


# ------------------------------------------------------------------------------- search with moments

EVENTS = [(3.0, 5.0, 440.0), (14.0, 17.0, 1900.0)]  # (start, end, tone Hz) in a 24-s recording


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    base = tmp_path_factory.mktemp("moments")
    rng = np.random.default_rng(1)
    long = 0.01 * rng.standard_normal(24 * RATE)
    t = np.arange(24 * RATE) / RATE
    for a, b, hz in EVENTS:
        sl = slice(int(a * RATE), int(b * RATE))
        long[sl] += 0.5 * np.sin(2 * np.pi * hz * t[sl])
    (base / "lib").mkdir()
    sf.write(base / "lib" / "long.wav", long.astype(np.float32), RATE)
    sf.write(base / "lib" / "short.wav", (0.3 * np.sin(2 * np.pi * 440 * t[: 2 * RATE])).astype(np.float32), RATE)
    model = make_model(base / "model.pt")
    build_index(base / "lib", base / "idx", model, progress=False, window=4.0, hop=2.0)
    return base, model


def test_index_records_windows_covering_long_files_only(library):
    base, _ = library
    index = open_index(base / "idx").index
    long_row = next(i for i, e in enumerate(index.entries) if e.path == "long.wav")
    spans = index.windows.spans[index.windows.rows_of(long_row)]
    assert spans[0].tolist() == [0.0, 4.0] and spans[-1].tolist() == [20.0, 24.0] and len(spans) == 11
    assert len(index.windows) == 11  # the 2-s file stays one item
    assert index.manifest["windows"] == {"window": 4.0, "hop": 2.0, "count": 11, "faiss": None, "embedding": "alone"}
    from soundsift.search.index import describe

    summary = describe(index)  # what `index info` and /api/info show
    assert (summary["windows"], summary["window_seconds"], summary["hop_seconds"]) == (11, 4.0, 2.0)


def test_api_hits_carry_moments_that_match_their_windows(library):
    base, _ = library
    index = open_index(base / "idx")
    hits = index.search(text="a beep", k=2, moments=3)
    by_path = {h.path: h for h in hits}
    long, short = by_path["long.wav"], by_path["short.wav"]
    assert (short.start, short.end) == (0.0, 2.0) and not short.is_moment
    table, row = index.index.windows, [e.path for e in index.index.entries].index("long.wav")
    q = index.searcher.embed_queries(["a beep"])[0]
    scores = table.embeddings[table.rows_of(row)] @ q
    expected = merge_moments(table.spans[table.rows_of(row)], scores)
    assert long.score == pytest.approx(float(scores.max()), abs=1e-5)
    assert (long.start, long.end) == (expected[0].start, expected[0].end)
    assert long.moments == [m.to_dict() for m in expected[:3]]
    files = index.search(text="a beep", k=2, rank="files")
    assert {h.path: h.score for h in files}["long.wav"] == pytest.approx(
        float(index.index.vector(long.id) @ q), abs=1e-5)


def test_cli_json_text_and_like_moment(library, capsys):
    base, _ = library
    idx, long = str(base / "idx"), str(base / "lib" / "long.wav")
    assert main(["search", idx, "a beep", "--json", "--moments", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert all({"start", "end", "moments"} <= set(h) and 1 <= len(h["moments"]) <= 2 for h in hits)
    assert main(["search", idx, "a beep"]) == 0
    lines = capsys.readouterr().out.splitlines()
    long_line = next(line for line in lines if "long.wav" in line)
    hit = next(h for h in hits if h["path"] == "long.wav")
    assert long_line.endswith(format_span(hit["start"], hit["end"]))
    assert next(line for line in lines if "short.wav" in line).endswith("short.wav")
    assert main(["search", idx, "--like", f"{long}@14-17", "--json", "--rank", "files"]) == 0
    assert [h["path"] for h in json.loads(capsys.readouterr().out)] == ["short.wav"]  # its own file left out
    for spec, message in ((f"{long}@5-3", "is not before its end"), (f"{long}@20-30", "after the end of the file")):
        assert main(["search", idx, "--like", spec]) == 2
        err = capsys.readouterr().err
        assert message in err and spec in err and len(err.strip().splitlines()) == 1


def test_like_a_moment_leaves_out_only_the_windows_that_overlap_it(library):
    """An example moment of an indexed recording: the recording's other moments still answer, scored
    from its windows apart from the example (a naive recomputation here), never overlapping it."""
    base, _ = library
    index = open_index(base / "idx")
    spec = f"{base / 'lib' / 'long.wav'}@14-17"
    hits = index.search(like=spec, k=5, moments=10)
    long = next(h for h in hits if h.path == "long.wav")
    table, row = index.index.windows, [e.path for e in index.index.entries].index("long.wav")
    rows = table.rows_of(row)
    spans = np.asarray(table.spans[rows])
    apart = [i for i, (s, e) in enumerate(spans) if e <= 14 or s >= 17]
    assert 0 < len(apart) < len(spans)
    q = index.searcher.embed_file(spec)
    expected = merge_moments(spans[apart], np.asarray(table.embeddings[rows])[apart] @ q, limit=10)
    assert long.score == pytest.approx(expected[0].score, abs=1e-5)
    assert long.moments == [m.to_dict() for m in expected]
    assert all(m["end"] <= 14 or m["start"] >= 17 for m in long.moments)
    assert "long.wav" not in [h.path for h in index.search(like=spec, k=5, rank="files")]


def test_api_search_route_carries_start_and_end(library):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from soundsift.search.server import create_app

    base, model = library
    client = TestClient(create_app(base / "idx", model))
    r = client.get("/api/search", params={"q": "a beep", "moments": 2})
    assert r.status_code == 200
    hits = r.json()
    assert hits == [h.to_dict() for h in open_index(base / "idx").search(text="a beep", k=10, moments=2)]
    assert client.get("/api/search", params={"q": "a beep", "rank": "bogus"}).status_code == 422
    assert "moments" not in client.get("/api/search", params={"q": "a beep"}).json()[0]


def test_incremental_reuse_and_changed_window_setting(library, tmp_path):
    base, model = library
    out = tmp_path / "idx"
    first = build_index(base / "lib", out, model, progress=False, window=4.0, hop=2.0)
    again = build_index(base / "lib", out, model, progress=False, window=4.0, hop=2.0)
    assert (first.embedded, again.embedded, again.unchanged) == (2, 0, 2)
    before = open_index(base / "idx").index.windows
    assert np.array_equal(open_index(out).index.windows.embeddings, before.embeddings)
    changed = build_index(base / "lib", out, model, progress=False, window=6.0)
    assert changed.embedded == 2 and len(open_index(out).index.windows) == 7  # 0..15 step 3, then 18-24
    whole = build_index(base / "lib", out, model, progress=False, window=0)
    assert whole.embedded == 2 and open_index(out).index.windows is None


def test_an_index_built_before_windows_still_searches(library, tmp_path):
    base, model = library
    out = tmp_path / "old"
    build_index(base / "lib", out, model, progress=False, window=0)
    vdir = next(p for p in out.iterdir() if p.name.startswith("v"))
    manifest = json.loads((vdir / "manifest.json").read_text())
    del manifest["windows"]  # as written before windows existed
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    index = open_index(out)
    hits = index.search(text="a beep", k=2)
    assert {(h.path, h.start, h.end) for h in hits} == {("long.wav", 0.0, 24.0), ("short.wav", 0.0, 2.0)}
    assert [h.id for h in hits] == [h.id for h in index.search(text="a beep", k=2, rank="files")]
