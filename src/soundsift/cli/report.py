"""Analysis of saved runs: ``report`` (figures and tables) and ``compare`` (a difference with an interval)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soundsift.cli.common import format_names, positive_int, quiet
from soundsift.errors import ConfigError


def report_main(args: argparse.Namespace) -> int:
    from soundsift.training.report import report

    if args.out is None and len(args.run_dirs) > 1:
        raise ConfigError("several RUN_DIRs make one report: say where with --out DIR")
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    done = report(args.run_dirs, out, query=args.query, log=lambda m: print(m, file=sys.stderr))
    print(f"wrote {len(done['files'])} files into {out} ({len(done['runs'])} runs); start at {out / 'index.md'}")
    return 0


def compare_main(args: argparse.Namespace) -> int:
    from soundsift.training.compare import compare, format_comparison, load_results

    common = dict(data_root=args.data_root, data_format=args.format, split=args.split,
                  max_seconds=args.max_seconds, batch_size=args.batch_size, progress=not quiet(args))
    a, b = load_results(args.a, **common), load_results(args.b, **common)
    result = compare(a, b, n_resamples=args.resamples, seed=args.seed, confidence=args.confidence)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0


#: the commands add_parsers registers (soundsift.cli.main builds only the group of the command run)
COMMANDS = ("report", "compare")


def add_parsers(sub) -> None:
    p = sub.add_parser("report", help="plots and tables (PNG, SVG, Markdown, CSV, LaTeX) from saved runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a recipe's or the demo's output folder (results.json and its runs), or train run folders")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report; required for several)")
    p.add_argument("--query", type=int, default=None,
                   help="caption index (in the teachers' split) of the correspondence figure; default: one "
                        "that truly describes several clips")
    p.set_defaults(func=report_main)

    p = sub.add_parser("compare", help="paired difference in test mAP@10 of two models, with a 95%% interval")
    p.add_argument("a", metavar="RUN_A", help="run folder, its test_queries.json, or a model file (the baseline)")
    p.add_argument("b", metavar="RUN_B", help="the same for the model compared with it: B - A is reported")
    p.add_argument("--resamples", type=positive_int, default=10_000, help="paired bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--confidence", type=float, default=0.95, help="coverage of the intervals")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--data-root", default=None,
                   help="dataset to evaluate model files on (run folders use their saved per-query results)")
    p.add_argument("--format", default=None, choices=format_names(),
                   help="dataset layout for --data-root (default: clotho, or the run's config)")
    p.add_argument("--split", default=None, help="split to evaluate model files on (default: evaluation)")
    p.add_argument("--max-seconds", type=float, default=None, help="cut clips to this length (seconds)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="clips embedded at once")
    p.set_defaults(func=compare_main)
