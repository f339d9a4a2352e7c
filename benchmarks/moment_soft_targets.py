"""Soft targets for the learned moment model: does adding the estimated correspondences (the teachers'
query-window similarities softmaxed over the windows at tau, ``training.moment_targets``) to its training
help? The setting is chosen on the validation split, then the test split is scored once for the plain
model and the chosen one, beside the sliding window and random windows measured in the same run.

    python benchmarks/moment_soft_targets.py --data-root DIR [--model zero-shot] [--seeds 0 1 2]
        [--distill 0.5 1 2] [--teacher MODEL ...] [--steps N] [--out DIR]

Grid (validation): loss_weight 1 with distill_weight 0 (plain) and each --distill value, and the paper's
section 5.1 setting (loss_weight 0, distill_weight 1); each over --seeds. The chosen soft setting has the
best validation mAP averaged over seeds. Intervals: paired bootstrap over queries (10,000 resamples, 95 %)
of the per-query metrics averaged over the seeds. Last line: ``ratio:`` test mAP of the chosen setting over
the plain model's (seed means).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from soundsift.training.moment_compare import KEYS, compare, per_query
from soundsift.training.moment_model import predict_windows, train_moment_model
from soundsift.training.moment_options import MomentTrainOptions
from soundsift.training.moment_train import LEARNED_HOP, LEARNED_WINDOW, moment_split_features


def mean_values(values: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([v[k] for v in values], axis=0) for k in KEYS}


def row(name: str, values: dict[str, np.ndarray]) -> str:
    return f"| {name} | " + " | ".join(f"{float(np.mean(values[k])):.2f}" for k in KEYS) + " |"


def interval(name: str, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    c = compare(a, b)
    return f"| {name} | " + " | ".join(f"{c[k]['B-A']:+.2f} [{c[k]['95% CI'][0]:.2f}, {c[k]['95% CI'][1]:.2f}]"
                                       for k in KEYS) + " |"


def _train_one(job):
    import torch

    torch.set_num_threads(1)
    setting, seed, options, train, truth, teachers = job
    t = time.time()
    head = train_moment_model(train, truth, options, teachers=teachers)
    return setting, seed, head, time.time() - t


def train_all(jobs, n_jobs, train, truth, teachers) -> dict:
    """(setting, seed) -> trained head; ``n_jobs`` processes at once (the results do not depend on it)."""
    work = [(setting, seed, options, train, truth, teachers) for setting, seed, options in jobs]
    if n_jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_train_one, work))
    else:
        done = [_train_one(w) for w in work]
    print(f"trained {len(done)} models, median {np.median([d[3] for d in done]):.0f} s each ({n_jobs} at once)")
    return {(setting, seed): head for setting, seed, head, _ in done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--model", default="zero-shot")
    parser.add_argument("--teacher", action="append", default=[], help="teacher models (default: --model itself)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--distill", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--no-paper", action="store_true", help="leave out the paper's setting (0, 1)")
    parser.add_argument("--steps", type=int, default=MomentTrainOptions().steps, help="training steps")
    parser.add_argument("--jobs", type=int, default=1, help="train this many models at once (processes)")
    parser.add_argument("--window-predictions", default=None, metavar="FILE",
                        help="the sliding window's test predictions (evaluate --task moments --model M --split test "
                             "--out FILE); default: computed here")
    parser.add_argument("--out", default=None, help="write the sliding window's test predictions here")
    args = parser.parse_args()
    started = time.time()

    def features(split: str, model: str = args.model):
        return moment_split_features(model, args.data_root, split, LEARNED_WINDOW, LEARNED_HOP, 32,
                                     skip_invalid=split == "train")

    _, train_recs, train = features("train")
    teachers = [features("train", t)[2] for t in args.teacher]
    truth = [q.windows for r in train_recs for q in r.queries]
    splits = {"val": features("val")}  # the test split is read after the choice

    def truth_of(split: str) -> list:
        return [q.windows for r in splits[split][1] for q in r.queries]

    gts = {"val": truth_of("val")}

    def scores(head, split: str) -> dict[str, np.ndarray]:
        _, recs, feats = splits[split]
        return per_query(gts[split], predict_windows(head, feats, [r.duration for r in recs], LEARNED_HOP))

    grid = [(1.0, 0.0)] + [(1.0, d) for d in args.distill] + ([] if args.no_paper else [(0.0, 1.0)])
    val: dict = {}
    print(f"validation: {len(gts['val'])} queries; {len(truth)} training queries; seeds {args.seeds}; "
          f"teachers {args.teacher or [args.model]}\n")
    print("| loss_weight, distill_weight | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    jobs = [(setting, seed, MomentTrainOptions(seed=seed, loss_weight=setting[0], distill_weight=setting[1],
                                               steps=args.steps)) for setting in grid for seed in args.seeds]
    heads = train_all(jobs, args.jobs, train, truth, teachers)
    for setting in grid:
        val[setting] = mean_values([scores(heads[setting, s], "val") for s in args.seeds])
        print(row(f"{setting[0]:g}, {setting[1]:g}", val[setting]))
    plain = grid[0]
    chosen = max(grid[1:], key=lambda s: float(np.mean(val[s]["mAP"])))
    print(f"\nchosen on validation mAP: loss_weight {chosen[0]:g}, distill_weight {chosen[1]:g}")
    print("| validation: chosen - plain | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    print(interval("difference [95 % CI]", val[plain], val[chosen]))

    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.windows import build_windows
    from soundsift.data.readers.moment_layout import MomentData
    from soundsift.training.moment_baseline import (
        random_predictions,
        sliding_window_predictions,
        write_predictions,
    )

    splits["test"] = features("test")
    gts["test"] = truth_of("test")
    data, recs, _ = splits["test"]
    loaded = load_model(args.model)
    window, hop = build_windows(loaded, None, None)  # the model's default, as evaluate --task moments
    audio = MomentData(args.data_root, "test").audio
    if args.window_predictions:
        from soundsift.data.readers.moments import read_moment_predictions

        given = read_moment_predictions(args.window_predictions)
        sliding = [{"qid": q.qid, "query": q.query, "vid": r.vid, "pred_relevant_windows": given.get(q.qid)}
                   for r in recs for q in r.queries]
    else:
        sliding = sliding_window_predictions(loaded, recs, audio, window, hop)
    rand = random_predictions(recs, window)
    test = {"window": per_query(gts["test"], [p["pred_relevant_windows"] for p in sliding]),
            "random": per_query(gts["test"], [p["pred_relevant_windows"] for p in rand])}
    per_seed = {setting: [scores(heads[setting, s], "test") for s in args.seeds] for setting in (plain, chosen)}
    test["plain"], test["chosen"] = mean_values(per_seed[plain]), mean_values(per_seed[chosen])
    print(f"\ntest ({data}): {len(gts['test'])} queries, run once")
    print("| system | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    print(row(f"sliding window, {args.model}, {window:g} s / {hop:g} s (baseline)", test["window"]))
    print(row(f"random windows, {window:g} s", test["random"]))
    for name, setting in (("learned, plain", plain), (f"learned, soft targets {chosen[0]:g}/{chosen[1]:g}", chosen)):
        print(row(f"{name}, mean of seeds", test["plain" if setting == plain else "chosen"]))
        for seed, values in zip(args.seeds, per_seed[setting]):
            print(row(f"{name}, seed {seed}", values))
    print("\n| test: difference [95 % CI] | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    print(interval("soft targets - plain", test["plain"], test["chosen"]))
    print(interval("soft targets - sliding window", test["window"], test["chosen"]))
    print(interval("plain - sliding window", test["window"], test["plain"]))
    if args.out:
        write_predictions(Path(args.out) / "window_test.jsonl", sliding)
        print(json.dumps({"out": args.out}))
    print(f"\n{time.time() - started:.0f} s")
    print(f"ratio: {float(np.mean(test['chosen']['mAP'])) / max(float(np.mean(test['plain']['mAP'])), 1e-9):.3f}")


if __name__ == "__main__":
    main()
