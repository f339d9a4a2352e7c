"""Run lighthouse's own moment-retrieval evaluation on seeded random predictions: test fixtures.

    python scripts/moment_fixtures/make_fixtures.py --lighthouse /path/to/lighthouse.git

``--lighthouse`` is a git directory (or a clone) of github.com/line/lighthouse; its
``training/standalone_eval`` is extracted with ``git archive`` into a temporary folder, run there with
this Python (it needs numpy and scikit-learn) and deleted. Only the inputs and lighthouse's outputs are
kept, as JSON in tests/fixtures/moments/ (the commit they came from is recorded).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "moments"
RUNNER = """
import json, sys
from standalone_eval.eval import eval_submission
gt = [json.loads(line) for line in open(sys.argv[1])]
pred = [json.loads(line) for line in open(sys.argv[2])]
print(json.dumps(eval_submission(pred, gt, verbose=False)))
"""


def window(rng: random.Random, duration: int, integer: bool) -> list[float]:
    """A random window inside [0, duration]; integer ends make ties and exact thresholds likely."""
    a, b = sorted(rng.uniform(0, duration) for _ in range(2))
    return [float(round(a)), float(round(b))] if integer else [round(a, 3), round(b, 3)]


def make_case(rng: random.Random, n_queries: int, integer: bool) -> tuple[list[dict], list[dict]]:
    """Ground truth and predictions for one case: near-hits, duplicates, tied scores, > 10 windows."""
    gt, pred = [], []
    for i in range(n_queries):
        duration = rng.choice([10, 30, 60, 300])
        windows = [window(rng, duration, integer) for _ in range(rng.randint(1, 4))]
        gt.append({"qid": f"q{i}", "query": f"query {i}", "vid": f"v{i // 2}", "duration": duration,
                   "relevant_windows": windows})
        preds = []
        for _ in range(rng.randint(1, 14)):
            kind = rng.random()
            if kind < 0.3:  # jitter a true window
                s, e = rng.choice(windows)
                jitter = duration * 0.05
                w = sorted([s + rng.uniform(-jitter, jitter), e + rng.uniform(-jitter, jitter)])
                w = [round(max(0.0, x), 0 if integer else 3) for x in w]
            elif kind < 0.45:
                w = list(rng.choice(windows))  # exact hit
            elif kind < 0.55 and preds:
                w = list(rng.choice(preds)[:2])  # duplicate prediction
            else:
                w = window(rng, duration, integer)
            preds.append([*w, round(rng.random(), 1)])  # one decimal: tied scores
        pred.append({"qid": f"q{i}", "query": f"query {i}", "vid": f"v{i // 2}", "pred_relevant_windows": preds})
    return gt, pred


def run_lighthouse(eval_dir: Path, gt: list[dict], pred: list[dict]) -> dict:
    """lighthouse's eval_submission on these inputs, run in its own folder."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "gt.jsonl", Path(tmp) / "pred.jsonl"]
        for path, rows in zip(paths, (gt, pred)):
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, paths)], cwd=eval_dir,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lighthouse", required=True, help="git directory of github.com/line/lighthouse")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    git = ["git", f"--git-dir={args.lighthouse}"]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    rng = random.Random(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as checkout:
        archive = subprocess.run([*git, "archive", "HEAD", "training/standalone_eval"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", checkout], input=archive.stdout, check=True)
        eval_dir = Path(checkout) / "training"
        for n, (n_queries, integer) in enumerate([(40, True), (40, False), (25, True), (60, False)]):
            gt, pred = make_case(rng, n_queries, integer)
            result = run_lighthouse(eval_dir, gt, pred)
            case = {"lighthouse_commit": commit, "seed": args.seed, "ground_truth": gt, "predictions": pred,
                    "lighthouse": {"MR-mAP": result["full"]["MR-mAP"], "MR-R1": result["full"]["MR-R1"],
                                   "brief": result["brief"]}}
            path = OUT / f"case{n}.json"
            path.write_text(json.dumps(case, indent=1) + "\n")
            print(f"wrote {path} ({n_queries} queries): {result['brief']}")


if __name__ == "__main__":
    main()
