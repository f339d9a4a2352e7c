"""Data commands: ``synth`` (the embedded benchmark), ``data info``, ``download``."""

from __future__ import annotations

import argparse
import json
import sys

from soundsift.cli.common import format_names, quiet


def synth_main(args: argparse.Namespace) -> int:
    if args.moments:
        from soundsift.data.synth.moments import generate_moments

        path = generate_moments(args.out, preset=args.preset, seed=args.seed, progress=not quiet(args))
        print(f"wrote the {args.preset} moment benchmark (seed {args.seed}) in Clotho-Moment layout to {path}")
        return 0
    from soundsift.data.synth.benchmark import generate

    path = generate(args.out, preset=args.preset, seed=args.seed, progress=not quiet(args))
    print(f"wrote the {args.preset} benchmark (seed {args.seed}) in ClothoV2 layout to {path}")
    return 0


def data_info_main(args: argparse.Namespace) -> int:
    """Print the report (text or JSON); 0 when ok, 1 when not (with ``--allow-problems``: when usable)."""
    from soundsift.data.check import format_report, inspect_dataset

    report = inspect_dataset(args.format, args.root, check_audio=not args.no_audio_check, relevance=args.relevance)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0 if (report.usable if args.allow_problems else report.ok) else 1


def download_main(args: argparse.Namespace) -> int:
    from soundsift.data.download import ZENODO, download_clotho, download_dcase2025_relevance
    from soundsift.data.readers.clotho import SPLITS

    if args.dataset == "dcase2025":
        kw = {"base_url": args.base_url} if args.base_url else {}
        path = download_dcase2025_relevance(args.dest, verify=not args.no_verify, progress=not quiet(args), **kw)
        print(f"the DCASE 2025 multi-relevance annotations are in {path}; use them with: soundsift evaluate "
              f"--data-root CLOTHO --split evaluation --relevance {path} --model ...", file=sys.stdout)
        return 0

    download_clotho(args.dest, splits=args.splits or SPLITS, base_url=args.base_url or ZENODO,
                    verify=not args.no_verify, keep_archives=args.keep_archives, progress=not quiet(args),
                    log=(lambda message: None) if quiet(args) else None)
    print(f"ClothoV2.1 is in {args.dest}; check it with: soundsift data info --format clotho {args.dest}",
          file=sys.stdout)
    return 0


#: the commands add_parsers registers (soundsift.cli.main builds only the group of the command run)
COMMANDS = ("synth", "data", "download")


def add_parsers(sub) -> None:
    p = sub.add_parser("synth", help="generate the embedded benchmark in ClothoV2 layout")
    p.add_argument("--out", default="runs/synth", help="folder to write the benchmark into")
    p.add_argument("--preset", default="small", help="size: tiny | small | medium | large")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same benchmark")
    p.add_argument("--moments", action="store_true",
                   help="write the moment benchmark instead: long recordings with events at known times, "
                        "annotations in Clotho-Moment's layout (presets tiny | small; docs/moments.md)")
    p.set_defaults(func=synth_main)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("info", help="clips, captions and problems of a dataset, per split")
    q.add_argument("root", help="dataset folder")
    q.add_argument("--format", default="clotho", choices=format_names(), help="dataset layout")
    q.add_argument("--no-audio-check", action="store_true", help="only check that files exist")
    q.add_argument("--relevance", default=None,
                   help="a relevance file (DCASE 2025 layout) whose relevant clips per query are counted "
                        "(default: ROOT/relevance_evaluation.csv when present)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--allow-problems", action="store_true", help="exit 0 when usable despite problems")
    q.set_defaults(func=data_info_main)

    p = sub.add_parser("download", help="download a dataset")
    p.add_argument("dataset", choices=["clotho", "dcase2025"],
                   help="clotho: ClothoV2.1; dcase2025: the DCASE 2025 task 6 multi-relevance annotations of the "
                        "ClothoV2 evaluation split (one CSV, DEST/relevance_evaluation.csv)")
    p.add_argument("dest", help="folder to download into (re-running resumes)")
    p.add_argument("--splits", nargs="+", default=None, help="clotho: only these splits (default: all three)")
    p.add_argument("--base-url", default=None,
                   help="mirror to download from (default: Zenodo; dcase2025: the baseline's GitHub repository)")
    p.add_argument("--keep-archives", action="store_true", help="keep the 7z archives after extraction")
    p.add_argument("--no-verify", action="store_true", help="skip checksum checks (MD5; dcase2025: sha256)")
    p.set_defaults(func=download_main)
