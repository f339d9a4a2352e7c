"""Search commands: ``index build|info``, ``search``, ``serve``, ``tag``.

Each ``add_*_parser(subparsers)`` registers a subcommand whose ``func(args)`` returns an exit code;
errors propagate to ``soundsift.cli.main``, which reports them.
"""

from __future__ import annotations

import argparse
import json
import sys

from soundsift.cli.common import positive_int, quiet
from soundsift.errors import require

# ------------------------------------------------------------------------------------------------ index


def index_build_main(args: argparse.Namespace) -> int:
    from soundsift.search.build import build_index

    report = build_index(
        args.audio_dir, args.out, args.model or ["zero-shot"], batch_size=args.batch_size, workers=args.workers,
        checksum=args.checksum, faiss=args.faiss, progress=not quiet(args), rebuild=args.rebuild,
        window=args.window, hop=args.hop,
    )
    print(report.summary())
    for s in report.skipped[:20]:
        print(f"  skipped {s['path']}: {s['reason']}", file=sys.stderr)
    if len(report.skipped) > 20:
        print(f"  ... and {len(report.skipped) - 20} more", file=sys.stderr)
    if report.skipped:
        print(f"skipped files and reasons: {args.out}/{report.version}/skipped.txt", file=sys.stderr)
    return 0


def index_info_main(args: argparse.Namespace) -> int:
    from soundsift.search.index import describe, open_index

    index = open_index(args.index, backend="exact", mmap=True)
    info = {**describe(index), "audio_root": str(index.audio_root), "model_path": index.model_path}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def add_index_parser(subparsers) -> argparse.ArgumentParser:
    from soundsift.search.build import FAISS_CHOICES

    """`soundsift index build --model MODEL AUDIO_DIR --out INDEX` and `soundsift index info INDEX`."""
    p = subparsers.add_parser("index", help="build and inspect search indexes of audio folders")
    sub = p.add_subparsers(dest="index_command", required=True)
    b = sub.add_parser("build", help="index an audio folder (incremental, atomic)")
    b.add_argument("audio_dir", help="folder searched recursively for WAV/FLAC/OGG/MP3/... files")
    b.add_argument("--model", action="append", default=None,
                   help="a model file (model.pt), a folder, or a published name (default: zero-shot, works offline, "
                        "untrained); repeat it for a system ensemble (the mean of the models' similarities)")
    b.add_argument("--out", required=True, help="index directory (created, or updated in place)")
    b.add_argument("--batch-size", type=positive_int, default=16, help="clips embedded at once")
    b.add_argument("--workers", type=positive_int, default=2, help="decoding workers: threads, or processes when more than 50 files are to be decoded")
    b.add_argument("--checksum", action="store_true",
                   help="also re-hash files whose size and mtime are unchanged")
    b.add_argument("--faiss", choices=FAISS_CHOICES, default="auto",
                   help="store a FAISS index (auto: ivfsq (IVF over 8-bit codes, re-ranked exactly) above 100k files when faiss is installed)")
    b.add_argument("--rebuild", action="store_true",
                   help="the index was built with another model: re-embed every file with this one")
    b.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="files longer than this are also indexed as overlapping windows, so that searches "
                        "find moments (default: the model's input length, 2 s for zero-shot; 0: whole files only)")
    b.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                   help="seconds between window starts (default: half the window)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=index_build_main)
    i = sub.add_parser("info", help="summary of an index")
    i.add_argument("index", help="index directory")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=index_info_main)
    return p


# ------------------------------------------------------------------------------------------------ search


def search_main(args: argparse.Namespace) -> int:
    from soundsift.audio import audio_file_path
    from soundsift.errors import ConfigError
    from soundsift.search.api import open_index
    from soundsift.search.moments import format_span, parse_moment_spec

    if args.query is None and args.like is None:
        raise ConfigError("give a text query, --like FILE, or both")
    if args.like is not None:
        audio_file_path(parse_moment_spec(args.like)[0])  # a typo fails before the index opens and the model loads
    index = open_index(args.index, model=args.model, backend=args.backend)
    hits = index.search(text=args.query, like=args.like, k=args.k, rank=args.rank,
                        moments=args.moments)  # an indexed --like example is left out
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
        return 0
    if not hits:
        print("no results" if len(index) else "no results (the index is empty)")
    for h in hits:
        span = f"  {format_span(h.start, h.end)}" if h.is_moment else ""
        print(f"{h.rank:4d}  {h.score:7.4f}  {h.path}{span}")
        for m in (h.moments or [])[1:]:
            print(f"{'':15}{m['score']:7.4f}  {format_span(m['start'], m['end'])}")
    return 0


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    from soundsift.search.index import BACKENDS

    """`soundsift search INDEX ["query"] [--like FILE] [-k 10] [--json] [--model MODEL] [--backend auto]`."""
    p = subparsers.add_parser("search", help="search an index with a text query, an example sound, or both")
    p.add_argument("index", help="index directory")
    p.add_argument("query", nargs="?", default=None,
                   help="what the sound is like, e.g. 'rain on a tin roof' (optional with --like)")
    p.add_argument("--like", metavar="FILE[@START-END]", default=None,
                   help="an audio file: rank the sounds by similarity to it (embedded with the index's model; "
                        "the indexed file with its content is left out); with a query too, the sum of the "
                        "two normalised query vectors; FILE@12.5-20 uses that moment of FILE (seconds)")
    p.add_argument("-k", "--k", "--top-k", dest="k", type=positive_int, default=10, help="number of results (default 10)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {rank, id, path, score, duration, start, end[, moments]}")
    p.add_argument("--rank", choices=("moments", "files"), default="moments",
                   help="rank files by their best moment (default) or by their whole-file embedding")
    p.add_argument("--moments", type=positive_int, default=None, metavar="N",
                   help="list up to N moments per file (neighbouring windows that score near a peak, merged)")
    p.add_argument("--model", action="append", default=None,
                   help="model file (default: the one that built the index; repeated: the ensemble that built it)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="exact scan or FAISS (auto: exact up to 100k files, the stored FAISS index above)")
    p.set_defaults(func=search_main)
    return p


# ------------------------------------------------------------------------------------------------ serve


def serve_main(args: argparse.Namespace) -> int:
    uvicorn = require("uvicorn", "the optional extra: pip install 'soundsift[serve]'", "soundsift serve")

    from soundsift.search.server import LOOPBACK_HOSTS, check_port, create_app

    check_port(args.host, args.port)  # before loading the model: a busy port fails at once
    loopback = args.host in LOOPBACK_HOSTS
    app = create_app(
        args.index, args.model, backend=args.backend, max_k=args.max_k, max_query_chars=args.max_query_chars,
        allowed_hosts=list(LOOPBACK_HOSTS) if loopback else None,
    )
    if not loopback:
        print(f"warning: serving on {args.host}: anyone who can reach this address can search and "
              "download the indexed files", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {app.state.searcher.index.path} on http://{host}:{args.port}/ (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if quiet(args) else "info")
    return 0


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    from soundsift.search.index import BACKENDS

    """`soundsift serve INDEX [--host 127.0.0.1] [--port 8000]`."""
    p = subparsers.add_parser("serve", help="HTTP search API and web page for an index")
    p.add_argument("index", help="index directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--model", action="append", default=None,
                   help="model file (default: the one that built the index; repeated: the ensemble that built it)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="exact scan or FAISS (auto: exact up to 100k files, the stored FAISS index above)")
    p.add_argument("--max-k", type=positive_int, default=100, help="largest k a request may ask for")
    p.add_argument("--max-query-chars", type=positive_int, default=1000, help="longest query a request may send")
    p.set_defaults(func=serve_main)
    return p


# ------------------------------------------------------------------------------------------------ tag


def tag_main(args: argparse.Namespace) -> int:
    from soundsift.audio import audio_file_path
    from soundsift.checkpoints import load_model
    from soundsift.search.tag import parse_labels, tag_files

    labels = parse_labels(args.labels, args.labels_file)
    for f in args.files:
        audio_file_path(f)  # a typo fails before the model loads
    model = load_model(args.model or ["zero-shot"])
    results = tag_files(model, args.files, labels, template=args.template, top=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["file"])
        for t in r["labels"]:
            print(f"  {t['score']:7.4f}  {t['probability']:6.1%}  {t['label']}")
    return 0


def add_tag_parser(subparsers) -> argparse.ArgumentParser:
    """`soundsift tag --model MODEL FILE [FILE ...] --labels "dog,rain,..." [--template ...] [--json]`."""
    p = subparsers.add_parser("tag", help="zero-shot tagging: rank text labels for audio files")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s)")
    p.add_argument("--model", action="append", default=None,
                   help="a model file (model.pt), a folder, or a published name (default: zero-shot, works offline, "
                        "untrained); repeat it for an ensemble")
    p.add_argument("--labels", default=None, help="comma-separated labels, e.g. 'dog,rain,car horn'")
    p.add_argument("--labels-file", default=None, help="a file with one label per line")
    p.add_argument("--template", default="{label}",
                   help="prompt template applied to each label, e.g. 'the sound of {label}'")
    p.add_argument("--top", type=positive_int, default=None, help="show only the best N labels")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {file, labels: [{label, score, probability}]}")
    p.set_defaults(func=tag_main)
    return p


def add_parsers(sub) -> None:
    for add in (add_index_parser, add_search_parser, add_serve_parser, add_tag_parser):
        add(sub)
