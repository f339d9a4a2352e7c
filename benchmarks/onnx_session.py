"""Opening the text graph, what a ``soundsift search`` under ONNX Runtime waits for: the zero-shot model's
MiniLM text graph (92 MB of weights) with its weights inside the graph (as exports were) or beside it in
``text.onnx.data`` (memory-mapped; as exports are now), with ONNX Runtime's default thread pool or one
thread (what a first request of few captions gets). Each variant opens the graph and embeds one caption
in a fresh process (as the CLI does), alternating, ``--repeats`` times; medians are printed.

    python benchmarks/onnx_session.py [--repeats 5]

Last line ``ratio: X``: inline weights with the default threads over weights beside the graph with one
thread (median seconds to open the session and embed the caption).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 3
if int(sys.argv[2]):
    options.intra_op_num_threads = int(sys.argv[2])
t0 = time.perf_counter()
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
ids = np.array([[101, 4542, 2006, 1037, 4412, 102]], np.int64)
session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
print(time.perf_counter() - t0)
"""


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnx

    from soundsift.checkpoints.runtime import onnx_model

    folder = onnx_model("zero-shot").folder  # exported into the cache on first use
    with tempfile.TemporaryDirectory() as tmp:
        inline = Path(tmp) / "text.onnx"
        onnx.save_model(onnx.load(str(folder / "text.onnx")), str(inline))  # the weights back inside
        variants = {"inline, default threads": (inline, 0), "inline, 1 thread": (inline, 1),
                    "beside, default threads": (folder / "text.onnx", 0), "beside, 1 thread": (folder / "text.onnx", 1)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, (graph, threads) in variants.items():
                out = subprocess.run([sys.executable, "-c", CHILD, str(graph), str(threads)], capture_output=True,
                                     text=True, check=True)
                times[name].append(float(out.stdout.strip().splitlines()[-1]))
    print(f"open MiniLM's text graph and embed one caption, fresh processes, median of {args.repeats} "
          f"(alternating); {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for name, values in times.items():
        print(f"  weights {name:<24} {statistics.median(values) * 1000:6.0f} ms")
    ratio = statistics.median(times["inline, default threads"]) / statistics.median(times["beside, 1 thread"])
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
