"""Time to first result of the CLI: ``soundsift search INDEX "query"`` and ``soundsift index build`` of one
file, with the zero-shot model run by torch and by ONNX Runtime (``--runtime onnx``), in the same run.

Each command runs as a fresh process (what a person at a shell waits for), alternating torch and ONNX,
``--repeats`` times; medians are printed, with the import time (``python -X importtime``: the sum of the
top-level imports) and whether torch was imported. The ONNX export is made once beforehand (cached, as the
CLI does on first use). Audio: generated tones (the speed does not depend on what they sound like).
The processes run from compiled bytecode, as an installed package does (``PYTHONPYCACHEPREFIX`` in the
run's folder; ``PYTHONDONTWRITEBYTECODE`` is dropped), after one warm-up process per runtime.
``--baseline-src DIR`` also runs the ONNX commands with the soundsift source at DIR (for example a
``git archive`` of an earlier commit), with its own cache and index: before and after in the same run.

    python benchmarks/cli_latency.py [--repeats 5] [--baseline-src /tmp/before/src]

Last line ``ratio: X``: torch's search latency over ONNX Runtime's (median wall seconds); with
``--skip-torch``, the baseline source's ONNX search latency over this tree's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")


def soundsift(args: list[str], env: dict[str, str], importtime: bool = False) -> tuple[float, float, str]:
    """(wall seconds, import seconds, stdout) of one ``python -m soundsift ARGS`` process."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "soundsift", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    imports = 0.0
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = line.split("|")
            if not parts[1].strip().isdigit():  # the header
                continue
            if parts[2].startswith(" ") and not parts[2][1:].startswith(" "):  # a top-level import
                imports += int(parts[1]) / 1e6
    return wall, imports, out.stdout


def write_library(folder: Path, n: int, seconds: float = 5.0) -> None:
    import soundfile as sf

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (100 + 37 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / f"sound{i:03d}.wav", wave.astype(np.float32), 16000)


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--files", type=int, default=200, help="files in the searched index")
    parser.add_argument("--skip-torch", action="store_true",
                        help="with --baseline-src: ONNX before and after only (the last line is their ratio)")
    parser.add_argument("--baseline-src", default=None, metavar="DIR",
                        help="also run the ONNX commands with the soundsift source (the folder holding soundsift/) here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        base["PYTHONPYCACHEPREFIX"] = str(work / "bytecode")
        cache = os.environ.get("SOUNDSIFT_CACHE", str(work / "cache"))
        runs = {"torch": ("torch", {**base, "PYTHONPATH": SRC, "SOUNDSIFT_CACHE": cache}),
                "onnx": ("onnx", {**base, "PYTHONPATH": SRC, "SOUNDSIFT_CACHE": cache})}
        if args.skip_torch:
            if not args.baseline_src:
                parser.error("--skip-torch needs --baseline-src")
            del runs["torch"]
        if args.baseline_src:
            runs["onnx, baseline"] = ("onnx", {**base, "PYTHONPATH": str(Path(args.baseline_src).resolve()),
                                               "SOUNDSIFT_CACHE": str(work / "cache-baseline")})
        write_library(work / "lib", args.files)
        write_library(work / "one", 1)
        index = {name: work / f"index-{i}" for i, name in enumerate(runs)}
        for name, (runtime, env) in runs.items():  # the indexes searched (and, for onnx, the export cached)
            soundsift(["index", "build", str(work / "lib"), "--out", str(index[name]), "--runtime", runtime,
                       "--no-progress"], env)
            soundsift(["search", str(index[name]), "warm up", "-k", "1"], env)  # bytecode compiled, files cached
        results: dict[str, dict[str, list[float]]] = {}
        for rep in range(args.repeats):
            for name, (runtime, env) in runs.items():
                row = results.setdefault(name, {"search": [], "imports": [], "build1": []})
                wall, _, out = soundsift(["search", str(index[name]), "rain on a roof", "-k", "5"], env)
                row["search"].append(wall)
                row["imports"].append(soundsift(["search", str(index[name]), "a dog", "-k", "5"], env,
                                                importtime=True)[1])
                one = work / f"one-{len(results)}-{rep}"  # a new index: the file is embedded every time
                wall, _, _ = soundsift(["index", "build", str(work / "one"), "--out", str(one), "--runtime", runtime,
                                        "--no-progress"], env)
                row["build1"].append(wall)
        code = ("import sys; from soundsift.cli.main import main; main(['search', sys.argv[1], 'wind', '-k', '1']); "
                "print('torch imported:', 'torch' in sys.modules)")
        print(f"CLI latency, {args.files}-file index of generated 5-s clips, {os.cpu_count()} cores, "
              f"median of {args.repeats} fresh processes each (same run, alternating; load average "
              f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):")
        for name, row in results.items():
            flag = subprocess.run([sys.executable, "-c", code, str(index[name])], capture_output=True,
                                  text=True, env=runs[name][1]).stdout.strip().splitlines()[-1]
            print(f"  {name:<15} search {np.median(row['search']):5.2f} s  (imports {np.median(row['imports']):4.2f} s; "
                  f"{flag})   index build of one file {np.median(row['build1']):5.2f} s")
        if args.baseline_src:
            before = float(np.median(results["onnx, baseline"]["search"]) / np.median(results["onnx"]["search"]))
            print(f"ONNX search, baseline over this tree: {before:.2f}")
        ratio = float(np.median(results["onnx, baseline" if args.skip_torch else "torch"]["search"])
                      / np.median(results["onnx"]["search"]))
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
