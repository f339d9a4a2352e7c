"""The ``soundsift`` command. Thin: parses arguments and calls library functions.

``main(argv)`` returns the exit code, so tests call it directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def _synth(args: argparse.Namespace) -> int:
    from soundsift.data.synth import generate

    path = generate(args.out, preset=args.preset, seed=args.seed, progress=not args.quiet)
    print(f"wrote the {args.preset} benchmark (seed {args.seed}) in ClothoV2 layout to {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from soundsift.config import load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        from soundsift.dry_run import dry_run

        return dry_run(config, pretrained=not args.no_pretrained)
    from soundsift.train import train

    result = train(config, progress=not args.quiet)
    if result.metrics:  # only the process of rank 0 reports
        print(json.dumps({"model": str(result.model_path), **result.metrics.get("test", {})}, indent=2))
    return 0


def _teachers(args: argparse.Namespace) -> int:
    from soundsift.teachers import make_teacher

    path = make_teacher(
        args.model, args.data_root, args.out, args.format, args.split, args.max_seconds,
        args.batch_size, args.half, progress=not args.quiet,
    )
    print(f"wrote teacher embeddings of {args.split} to {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from soundsift.evaluate import evaluate

    result = evaluate(
        args.model, args.data_root, args.format, args.split, args.max_seconds, args.batch_size,
        args.submission, progress=not args.quiet,
    )
    print(json.dumps(result, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from soundsift.demo import format_table, run_demo

    summary = run_demo(args.out, seed=args.seed, preset=args.preset, overrides=tuple(args.overrides),
                       progress=not args.quiet, control=args.control)
    print(format_table(summary["rows"]))
    if summary.get("correspondence_auc"):
        auc = ", ".join(f"{k} {v:.3f}" for k, v in summary["correspondence_auc"].items())
        print(f"\nestimated correspondences vs ground truth (training split, ROC AUC): {auc}")
    print(f"\n{summary['seconds']} s; results in {args.out}/results.json and results.md")
    return 0


def _dataset_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--format", default="clotho", help="clotho | audiocaps | wavcaps | folder")
    p.add_argument("--split", default=split)
    p.add_argument("--max-seconds", type=float, default=None, help="cut clips to this length")
    p.add_argument("--batch-size", type=int, default=32)


def build_parser() -> argparse.ArgumentParser:
    from soundsift import __version__

    parser = argparse.ArgumentParser(prog="soundsift", description="Language-based audio retrieval.")
    parser.add_argument("--version", action="version", version=f"soundsift {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the embedded benchmark in ClothoV2 layout")
    p.add_argument("--out", default="runs/synth")
    p.add_argument("--preset", default="small", help="tiny | small | medium | large")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train (stage 1 or stage 2) from a YAML config")
    p.add_argument("--config", required=True, help="YAML file, or a packaged one such as demo/stage1.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.epochs=3")
    p.add_argument("--dry-run", action="store_true", help="build, print config and sizes, one step")
    p.add_argument("--no-pretrained", action="store_true", help="with --dry-run: random weights")
    p.set_defaults(func=_train)

    p = sub.add_parser("teachers", help="embed a training split with a model: teacher data for stage 2")
    p.add_argument("--model", required=True, help="a soundsift model file (model.pt)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    _dataset_args(p, "development")
    p.add_argument("--half", action="store_true", help="store float16 embeddings")
    p.set_defaults(func=_teachers)

    p = sub.add_parser("evaluate", help="retrieval metrics of a model on a dataset split")
    p.add_argument("--model", required=True)
    _dataset_args(p, "evaluation")
    p.add_argument("--submission", default=None, help="also write a DCASE submission CSV here")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="the whole method end to end on the generated benchmark")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="small")
    p.add_argument("--control", action="store_true",
                   help="also fine-tune with L_sup alone (stage2-sup): is the gain more than longer training?")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every run")
    p.set_defaults(func=_demo)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Subcommands whose modules live elsewhere in the package (data, download, search)."""
    from soundsift import search_cli
    from soundsift.data.inspect import data_info_main
    from soundsift.download import download_main

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("info", help="clips, captions and problems of a dataset, per split")
    q.add_argument("root")
    q.add_argument("--format", default="clotho", choices=["clotho", "audiocaps", "wavcaps", "folder"])
    q.add_argument("--no-audio-check", action="store_true", help="only check that files exist")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--allow-problems", action="store_true", help="exit 0 when usable despite problems")
    q.set_defaults(func=data_info_main)

    p = sub.add_parser("download", help="download a dataset")
    p.add_argument("dataset", choices=["clotho"])
    p.add_argument("dest")
    p.add_argument("--base-url", default=None, help="mirror to download from (default: Zenodo)")
    p.add_argument("--keep-archives", action="store_true")
    p.add_argument("--no-verify", action="store_true", help="skip MD5 checks")
    p.set_defaults(func=download_main)

    search_cli.add_index_parser(sub)
    search_cli.add_search_parser(sub)
    search_cli.add_serve_parser(sub)
    search_cli.add_tag_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # expected user-facing errors get one clear line, not a traceback
        from soundsift.errors import USER_ERRORS

        if isinstance(exc, USER_ERRORS):
            print(f"soundsift: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
