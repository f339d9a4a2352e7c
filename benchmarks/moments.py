"""Two moment prediction files on the same annotations: each one's R1@0.5 / R1@0.7 / mAP and the paired
bootstrap interval (over queries) of the difference B - A.

    python benchmarks/moments.py GT.jsonl A.jsonl B.jsonl
"""

from __future__ import annotations

import json
import sys

import numpy as np

from soundsift.data.readers.moments import read_moment_annotations, read_moment_predictions
from soundsift.metrics.intervals import paired_bootstrap_ci
from soundsift.metrics.moments import moment_retrieval_metrics

KEYS = ("R1@0.5", "R1@0.7", "mAP")


def per_query(truth: list, predicted: dict, qids: list[str]) -> dict[str, np.ndarray]:
    rows = [moment_retrieval_metrics([gt], [predicted.get(q)], rounded=False) for gt, q in zip(truth, qids)]
    return {k: np.array([float(r[k]) for r in rows]) for k in KEYS}


def main(gt: str, a: str, b: str) -> dict[str, object]:
    queries = [q for rec in read_moment_annotations(gt) for q in rec.queries]
    truth, qids = [q.windows for q in queries], [q.qid for q in queries]
    values = {name: per_query(truth, read_moment_predictions(path), qids) for name, path in (("A", a), ("B", b))}
    out: dict[str, object] = {"A": a, "B": b, "n_queries": len(qids)}
    for k in KEYS:
        mean, low, high = paired_bootstrap_ci(values["B"][k], values["A"][k])
        out[k] = {"A": round(float(values["A"][k].mean()), 2), "B": round(float(values["B"][k].mean()), 2),
                  "B-A": round(mean, 2), "95% CI": [round(low, 2), round(high, 2)]}
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4]), indent=2))
