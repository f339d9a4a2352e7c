"""Moments in long real recordings, through the HTTP API: R1@0.5 / R1@0.7 / mAP of the moments
``GET /api/search`` returns, against the plain sliding window and random windows.

The recordings are composed by ``real_moments_data.py`` (real event sounds from Debian packages at
known times over real ambience loops or generated noise, 0 / 6 / 12 dB; development and test halves
share no source sound). For each half: ``build_index`` with the default model (zero-shot) and default
settings, exactly as ``soundsift index build`` runs; the real server (uvicorn on 127.0.0.1, an
ephemeral port) answers ``/api/search?q=QUERY&k=N&moments=10`` for every query; the hit of the query's
recording gives the predicted moments (best first). Scored per query against the event's span:

- ``served``: the returned moments (what a user gets);
- ``sliding window``: the index's own windows scored with the query, each window a moment, best first,
  temporal NMS at IoU 0.5 (no merging): the plain sliding-window baseline;
- ``previous default``: 10 s / 5 s windows merged by the ratio rule 0.9 (the default before the real
  recordings were measured), from a 10 s / 5 s index when one is built (``--previous-index``, or one
  left in ``--work``), else from YAMNet's patch scores (``real_moments_sweep.simulated``);
- ``random``: 10 random windows of the window length per query (mean of 20 seeds; seed 0 for the
  paired intervals), for the default window and for 10 s.

Also printed: how often the query's recording is the top hit. Paired bootstrap intervals (over queries,
10,000 resamples) of served - sliding window. ``--sweep`` (development half only) scores moment
settings from YAMNet's patch scores (``real_moments_sweep.py``).

    python benchmarks/real_moments.py [--cache DIR] [--recordings N] [--seed S] [--work DIR]
        [--sweep] [--sweep-synth SYNTH_DIR] [--window W --hop H] [--previous-index] [--halves dev,test]

Ends with ``ratio: X`` (served R1@0.5 over random R1@0.5, test half).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import real_moments_data as data  # noqa: E402
import real_sounds  # noqa: E402

from soundsift.metrics.intervals import paired_bootstrap_ci  # noqa: E402
from soundsift.metrics.moments import moment_retrieval_metrics  # noqa: E402

KEYS = ("R1@0.5", "R1@0.7", "mAP")


def read_queries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Server:
    """The app of ``soundsift serve`` under uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, index: Path):
        import uvicorn

        from soundsift.search.server import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = create_app(index, allowed_hosts=["127.0.0.1"])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def search(self, query: str, k: int) -> list[dict]:
        qs = urllib.parse.urlencode({"q": query, "k": k, "moments": 10})
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/search?{qs}", timeout=120) as r:
            return json.loads(r.read())


def served_predictions(index: Path, queries: list[dict], n_files: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per query: the returned moments of its recording's hit (K, 3), and whether that hit ranked first."""
    preds, first = [], []
    with Server(index) as server:
        for q in queries:
            hits = server.search(q["query"], min(n_files, 100))
            mine = [h for h in hits if Path(h["path"]).stem == q["vid"]]
            moments = mine[0].get("moments", []) if mine else []
            preds.append(np.array([[m["start"], m["end"], m["score"]] for m in moments]).reshape(-1, 3))
            first.append(bool(hits) and Path(hits[0]["path"]).stem == q["vid"])
    return preds, np.array(first)


def window_predictions(index: Path, queries: list[dict], ratio: float | None = None) -> list[np.ndarray]:
    """From the index's own windows scored with each query: the plain sliding window (``ratio`` None:
    every window a moment, best first, NMS at IoU 0.5), or windows merged by the ratio rule (the
    search's merging before the peak rule)."""
    from soundsift.search.index import load_searcher
    from soundsift.spans import NMS_IOU, merge_moments, temporal_iou

    searcher = load_searcher(index)
    idx, table = searcher.index, searcher.index.windows
    vectors = searcher.embed_queries([q["query"] for q in queries])
    rows = {Path(e.path).stem: r for r, e in enumerate(idx.entries)}
    out = []
    for q, vec in zip(queries, vectors):
        sl = table.rows_of(rows[q["vid"]])
        spans, scores = table.spans[sl], np.asarray(table.embeddings[sl], np.float32) @ vec
        if ratio is not None:
            moments = merge_moments(spans, scores, ratio=ratio)[:10]
            out.append(np.array([[m.start, m.end, m.score] for m in moments]).reshape(-1, 3))
            continue
        kept: list[tuple[float, float, float]] = []
        for i in np.argsort(-scores, kind="stable"):
            cand = (float(spans[i][0]), float(spans[i][1]))
            if all(temporal_iou(cand, k[:2]) < NMS_IOU for k in kept):
                kept.append((*cand, float(scores[i])))
            if len(kept) == 10:
                break
        out.append(np.array(kept).reshape(-1, 3))
    return out


def random_predictions(queries: list[dict], window: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for q in queries:
        length = min(window, q["duration"])
        starts = rng.uniform(0, q["duration"] - length, 10)
        out.append(np.stack([starts, starts + length, np.linspace(1, 0.1, 10)], 1))
    return out


def per_query(truth: list, preds: list) -> dict[str, np.ndarray]:
    rows = [moment_retrieval_metrics([t], [p], rounded=False) for t, p in zip(truth, preds)]
    return {k: np.array([float(r[k]) for r in rows]) for k in KEYS}


def fmt(values: dict[str, np.ndarray]) -> str:
    return "  ".join(f"{k} {values[k].mean():6.2f}" for k in KEYS)


def built(folder: Path, work: Path, window: float, hop: float, rule: str | None = None) -> tuple[Path, str]:
    """The index of ``folder`` at ``window``/``hop`` with windows made by ``rule`` (default: the build's;
    ``search.embedding.embed_with_windows``), built once under ``work``, then reused (an unchanged
    library re-embeds nothing), and a line describing it."""
    from soundsift.search.build import build_index
    from soundsift.search.index import open_index
    from soundsift.spans import PATCH_RULE

    rule = rule or PATCH_RULE
    index = work / f"index-{folder.name}-w{window:g}-h{hop:g}-{rule}"
    t0 = time.perf_counter()
    build_index(folder, index, "zero-shot", progress=False, window=window, hop=hop, window_rule=rule)
    took = time.perf_counter() - t0
    opened = open_index(index)
    n_files, seconds = len(opened), sum(e.duration for e in opened.entries)
    rows = n_files + (len(opened.windows) if opened.windows is not None else 0)
    return index, (f"{window:g} s / {hop:g} s, windows {rule}: {rows} rows ({rows / seconds:.3f} per s of audio, "
                   f"{rows * opened.embeddings.shape[1] * 4 / seconds:.0f} bytes per s), build {took:.0f} s")


def evaluate_half(folder: Path, ann: Path, work: Path, window: float | None, hop: float | None,
                  previous_index: bool = False) -> dict:
    """Build, serve, query and score one half; prints its table and returns the per-query values."""
    from soundsift.spans import DEFAULT_WINDOW, default_windows

    queries = read_queries(ann)
    truth = [q["relevant_windows"] for q in queries]
    window, hop = (window, hop or window / 2) if window else default_windows(None)
    index, line = built(folder, work, window, hop)
    n_files = len({q["vid"] for q in queries})
    served, first = served_predictions(index, queries, n_files)
    values = {"served (HTTP)": per_query(truth, served),
              f"sliding window {window:g}/{hop:g}": per_query(truth, window_predictions(index, queries))}
    if previous_index or (work / f"index-{folder.name}-w10-h5" / "CURRENT").is_file():
        old, old_line = built(folder, work, 10.0, 5.0)
        values["previous default: 10/5, ratio 0.9"] = per_query(truth, window_predictions(old, queries, ratio=0.9))
        values["sliding window 10/5"] = per_query(truth, window_predictions(old, queries))
    else:  # from YAMNet's patch scores (real_moments_sweep.simulated): no second index to build
        import real_moments_sweep

        old_line = "10 s / 5 s: not built; its moments simulated from the patch scores"
        values["previous default: 10/5, ratio 0.9 (simulated)"] = per_query(
            truth, real_moments_sweep.simulated(folder, queries, 10.0, 5.0, 0.9))
    for length in sorted({window, 10.0}):
        rand = [per_query(truth, random_predictions(queries, length, s)) for s in range(20)]
        values[f"random {length:g}-s windows"] = {k: np.mean([r[k] for r in rand], axis=0) for k in KEYS}
    seconds = sum(float(q["duration"]) for q in {q["vid"]: q for q in queries}.values())
    print(f"{folder.name}: {n_files} recordings, {seconds / 60:.1f} min, {len(queries)} queries")
    print(f"  index {line}\n  index {old_line}")
    for name, v in values.items():
        print(f"  {name:<36} {fmt(v)}")
    print(f"  recording ranked first for its query: {100 * first.mean():.2f} % (random: {100 / n_files:.2f} %)")
    seed0 = per_query(truth, random_predictions(queries, window or DEFAULT_WINDOW, 0))
    others = [(name, values[name]) for name in list(values)[1:] if not name.startswith("random")]
    others.append((f"random {window:g}-s (seed 0)", seed0))
    for base, other in others:
        ci = {k: paired_bootstrap_ci(values["served (HTTP)"][k], other[k]) for k in KEYS}
        print(f"  served - {base}: " + "  ".join(f"{k} {m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for k, (m, lo, hi) in ci.items()))
    return values


def compare_rules(folder: Path, ann: Path, work: Path, rules: list[str]) -> None:
    """The moments ``/api/search`` returns from indexes whose windows were made by each of ``rules``
    (``"alone"``: each window embedded on its own; a patch rule: pooled from the file's patches), at the
    default window, with paired bootstrap intervals of each against the first."""
    from soundsift.spans import default_windows

    queries = read_queries(ann)
    truth = [q["relevant_windows"] for q in queries]
    window, hop = default_windows(None)
    n_files = len({q["vid"] for q in queries})
    values = {}
    for rule in rules:
        index, line = built(folder, work, window, hop, rule)
        print(f"  index {line}", flush=True)
        values[rule] = per_query(truth, served_predictions(index, queries, n_files)[0])
    rand = [per_query(truth, random_predictions(queries, window, s)) for s in range(20)]
    values[f"random {window:g}-s windows"] = {k: np.mean([r[k] for r in rand], axis=0) for k in KEYS}
    print(f"{folder.name}: served moments by how the windows were made ({len(queries)} queries)")
    for name, v in values.items():
        print(f"  {name:<36} {fmt(v)}")
    for rule in rules[1:]:
        ci = {k: paired_bootstrap_ci(values[rule][k], values[rules[0]][k]) for k in KEYS}
        print(f"  {rule} - {rules[0]}: " + "  ".join(f"{k} {m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for k, (m, lo, hi) in ci.items()))


def simulate_half(folder: Path, queries: list[dict]) -> None:
    """The default (2 s / 1 s, merged as search merges) against the previous default (10 s / 5 s, ratio
    0.9) and random windows, from YAMNet's patch scores (no index, no server), with paired intervals."""
    import real_moments_sweep as sweep

    from soundsift.spans import default_windows

    truth = [q["relevant_windows"] for q in queries]
    window, hop = default_windows(None)
    values = {f"default {window:g}/{hop:g} (simulated)": per_query(truth, sweep.simulated(folder, queries, window, hop)),
              "previous 10/5, ratio 0.9 (simulated)": per_query(truth, sweep.simulated(folder, queries, 10.0, 5.0, 0.9))}
    for length in (window, 10.0):
        rand = [per_query(truth, random_predictions(queries, length, s)) for s in range(20)]
        values[f"random {length:g}-s windows"] = {k: np.mean([r[k] for r in rand], axis=0) for k in KEYS}
    print(f"{folder.name} (simulated from patch scores): {len(queries)} queries")
    for name, v in values.items():
        print(f"  {name:<36} {fmt(v)}")
    first, second = list(values)[:2]
    ci = {k: paired_bootstrap_ci(values[first][k], values[second][k]) for k in KEYS}
    print("  default - previous: " + "  ".join(f"{k} {m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for k, (m, lo, hi) in ci.items()))


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=real_sounds.default_cache().parent / "real_moments")
    parser.add_argument("--recordings", type=int, default=24, help="recordings per half")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="score moment settings on the development half")
    parser.add_argument("--sweep-synth", type=Path, metavar="DIR",
                        help="also sweep on the validation split of a synth --moments folder")
    parser.add_argument("--window", type=float, help="index window (seconds); default: the build's")
    parser.add_argument("--hop", type=float, help="index hop (seconds); default: the build's")
    parser.add_argument("--work", type=Path, help="where the indexes are built and kept (default: under the cache)")
    parser.add_argument("--simulate", choices=("dev", "test"),
                        help="also score the default and the previous default on this half from the patch scores")
    parser.add_argument("--previous-index", action="store_true",
                        help="build a 10 s / 5 s index for the previous default (else reuse one or simulate it)")
    parser.add_argument("--halves", default="dev,test", help="which halves to evaluate")
    parser.add_argument("--compare-rules", metavar="HALF:RULES",
                        help="e.g. dev:alone,inside,centre: served moments of indexes whose windows were made by "
                             "each rule (alone, or pooled from the file's patches), paired against the first")
    args = parser.parse_args(argv)
    sounds_cache = real_sounds.default_cache()
    evs, bgs = data.events(sounds_cache), data.backgrounds(sounds_cache)
    root = args.cache / f"seed{args.seed}-n{args.recordings}"
    anns = {}
    for split in ("dev", "test"):
        ann = root / f"real_moments_{split}.jsonl"
        if not ann.is_file():
            data.compose(root, evs, bgs, split, args.recordings, args.seed)
        anns[split] = ann
    print(f"{len(evs)} event sounds, {len(bgs)} real backgrounds; recordings under {root}")
    if args.sweep:
        import real_moments_sweep

        real_moments_sweep.sweep(root / "dev", read_queries(anns["dev"]))
    if args.simulate:
        simulate_half(root / args.simulate, read_queries(anns[args.simulate]))
    if args.sweep_synth:
        import real_moments_sweep

        real_moments_sweep.sweep(args.sweep_synth / "validation",
                                 read_queries(args.sweep_synth / "clotho_moment_val_release.jsonl"))
    results = {}
    work = args.work or root / "work"
    work.mkdir(parents=True, exist_ok=True)
    if args.compare_rules:
        half, rules = args.compare_rules.split(":")
        compare_rules(root / half, anns[half], work, rules.split(","))
    for split in filter(None, args.halves.split(",")):
        results[split] = evaluate_half(root / split, anns[split], work, args.window, args.hop, args.previous_index)
    if not results:
        return 0.0
    last = results[list(results)[-1]]
    rand = [v for k, v in last.items() if k.startswith("random")][0]
    ratio = last["served (HTTP)"]["R1@0.5"].mean() / max(rand["R1@0.5"].mean(), 1e-9)
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    run()
