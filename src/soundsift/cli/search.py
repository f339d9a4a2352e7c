"""Search commands: ``index build|info|dupes``, ``search``, ``serve``, ``tag``.

Each ``add_*_parser(subparsers)`` registers a subcommand whose ``func(args)`` returns an exit code;
errors propagate to ``soundsift.cli.main``, which reports them.
"""

from __future__ import annotations

import argparse
import json
import sys

from soundsift.cli.common import add_runtime_option, non_negative_int, positive_int, quiet
from soundsift.errors import require

# ------------------------------------------------------------------------------------------------ index


def _one_line_warnings() -> None:
    """Warnings (a migrated index, an unreadable previous version) as one ``warning: ...`` line each."""
    import warnings

    warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)


def index_build_main(args: argparse.Namespace) -> int:
    from soundsift.search.build import build_index

    _one_line_warnings()
    report = build_index(
        args.audio_dir, args.out, args.model or ["zero-shot"], batch_size=args.batch_size, workers=args.workers,
        checksum=args.checksum, faiss=args.faiss, progress=not quiet(args), rebuild=args.rebuild,
        window=args.window, hop=args.hop, runtime=args.runtime or "torch", quantize=args.quantize,
        decode_timeout=args.decode_timeout or None,
    )
    print(report.summary())
    if args.stats:
        from soundsift.search.stats import format_stages

        print("seconds per stage (decoding-side stages summed over the workers):")
        print(format_stages(report.stages))
    for s in report.skipped[:20]:
        print(f"  skipped {s['path']}: {s['reason']}", file=sys.stderr)
    if len(report.skipped) > 20:
        print(f"  ... and {len(report.skipped) - 20} more", file=sys.stderr)
    if report.skipped:
        print(f"skipped files and reasons: {args.out}/{report.version}/skipped.txt", file=sys.stderr)
    return 0


def index_watch_main(args: argparse.Namespace) -> int:
    from soundsift.search.watch import Watcher, WatchOptions

    model = args.model if args.model is None or len(args.model) > 1 else args.model[0]
    watcher = Watcher(args.folder, args.out, model, WatchOptions(args.debounce, args.poll, args.faiss),
                      report=lambda line: print(line, flush=True))
    print(f"watching {watcher.folder} for {watcher.out} (Ctrl+C stops)", flush=True)
    try:
        watcher.run()
    except KeyboardInterrupt:
        print("stopped; the index holds the last complete version", file=sys.stderr)
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


def index_dupes_main(args: argparse.Namespace) -> int:
    from soundsift.search.dupes import check_duration_change, check_threshold, find_duplicates
    from soundsift.search.index import open_index

    check_threshold(args.threshold)  # before the index opens
    check_duration_change(args.max_duration_change)
    index = open_index(args.index, mmap=True)
    groups = find_duplicates(index, args.threshold, args.neighbours, args.max_duration_change)
    if args.json:
        print(json.dumps([g.to_dict() for g in groups], indent=2))
        return 0
    same = sum(g.kind == "identical" for g in groups)
    print(f"{len(groups)} group{'s' if len(groups) != 1 else ''} in {len(index)} files: {same} of identical files, "
          f"{len(groups) - same} of near-duplicates (cosine >= {args.threshold}, durations within "
          f"{args.max_duration_change:.0%})")
    for g in groups:
        print(f"{'identical' if g.kind == 'identical' else 'near-duplicates'}, {len(g.members)} files:")
        for m in g.members:
            note = "  (identical content to another file listed here)" if m.identical and g.kind == "near" else ""
            print(f"  {m.similarity:7.4f}  {m.path}{note}")
    return 0


def add_index_parser(subparsers) -> argparse.ArgumentParser:
    """`soundsift index build --model MODEL AUDIO_DIR --out INDEX`, `index info INDEX`, `index dupes INDEX`,
    `index watch FOLDER --out INDEX`."""
    from soundsift.search.backends import FAISS_KINDS
    from soundsift.search.decoding import DEFAULT_TIMEOUT
    from soundsift.search.dupes import DEFAULT_MAX_DURATION_CHANGE, DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD

    faiss_choices = ("auto", "none", *FAISS_KINDS)
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
    b.add_argument("--faiss", choices=faiss_choices, default="auto",
                   help="store a FAISS index (auto: ivfsq (IVF over 8-bit codes, re-ranked exactly) above 100k files when faiss is installed)")
    b.add_argument("--rebuild", action="store_true",
                   help="the index was built with another model: re-embed every file with this one")
    b.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="files longer than this are also indexed as overlapping windows, so that searches "
                        "find moments (default: the model's input length, 2 s for zero-shot; 0: whole files only)")
    b.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                   help="seconds between window starts (default: half the window)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_runtime_option(b)
    b.add_argument("--decode-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"give up on a file whose decoding takes longer (reported as skipped; its worker "
                        f"process is replaced; default {DEFAULT_TIMEOUT:g}; 0: no limit)")
    b.add_argument("--stats", action="store_true",
                   help="print the seconds spent per stage (listing, hashing, decoding, resampling, "
                        "thumbnails, model, writing)")
    b.add_argument("--quantize", choices=["int8"], default=None,
                   help="with --runtime onnx: int8 weights (faster, slightly different embeddings; recorded, so "
                        "searches use it too); default: float32")
    b.set_defaults(func=index_build_main)
    w = sub.add_parser("watch", help="keep an index current while files are added, changed, moved or deleted")
    w.add_argument("folder", help="the audio folder to watch (recursively)")
    w.add_argument("--out", required=True, help="index directory (created, or caught up by a rescan on start)")
    w.add_argument("--model", action="append", default=None,
                   help="the model (default: the one that built the index, else zero-shot; repeat it for an ensemble)")
    w.add_argument("--debounce", type=float, default=1.0, metavar="SECONDS",
                   help="a changed file is indexed once this long has passed since its last change event and "
                        "its size and mtime stayed the same meanwhile (default 1)")
    w.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                   help="how often to look for a folder that has disappeared (default 2)")
    w.add_argument("--faiss", choices=faiss_choices, default="auto", help="FAISS option for new segments, as in build")
    w.set_defaults(func=index_watch_main)
    i = sub.add_parser("info", help="summary of an index")
    i.add_argument("index", help="index directory")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=index_info_main)
    d = sub.add_parser("dupes", help="list groups of identical and near-duplicate files")
    d.add_argument("index", help="index directory")
    d.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T",
                   help=f"cosine similarity of whole-file embeddings from which two files are near-duplicates "
                        f"(default {DEFAULT_THRESHOLD}, measured for the zero-shot model: docs/duplicates.md)")
    d.add_argument("--max-duration-change", type=float, default=DEFAULT_MAX_DURATION_CHANGE, metavar="F",
                   help="near-duplicates' durations differ by at most this fraction of the longer one "
                        f"(default {DEFAULT_MAX_DURATION_CHANGE}: a trim of up to 10%%; 1: any)")
    d.add_argument("--neighbours", type=positive_int, default=DEFAULT_NEIGHBOURS, metavar="N",
                   help="with a FAISS index (above 100k files), the nearest files checked per file (the exact "
                        "scan below checks every pair)")
    d.add_argument("--json", action="store_true",
                   help="print a JSON list of {kind, members: [{id, path, duration, similarity, identical}]}")
    d.set_defaults(func=index_dupes_main)
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
    if args.where is not None:
        from soundsift.search.where import parse_where

        parse_where(args.where)  # likewise a malformed filter
    index = open_index(args.index, model=args.model, backend=args.backend, runtime=args.runtime)
    hits = index.search(text=args.query, like=args.like, k=args.k, rank=args.rank, moments=args.moments,
                        where=args.where)  # an indexed --like example is left out
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
        return 0
    if not hits:
        print("no results" + (" match the filter" if args.where else "") if len(index)
              else "no results (the index is empty)")
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
    p.add_argument("--where", metavar="FILTER", default=None,
                   help="only files that match, e.g. \"duration < 5 and path ~ 'foley/'\" (fields: duration, "
                        "size, sample_rate, channels, path, folder, ext, id; see docs/library.md)")
    p.add_argument("--moments", type=positive_int, default=None, metavar="N",
                   help="list up to N moments per file (neighbouring windows that score near a peak, merged)")
    p.add_argument("--model", action="append", default=None,
                   help="model file (default: the one that built the index; repeated: the ensemble that built it)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="exact scan or FAISS (auto: exact up to 100k files, the stored FAISS index above)")
    add_runtime_option(p, recorded=True)
    p.set_defaults(func=search_main)
    return p


# ------------------------------------------------------------------------------------------------ serve


def serve_main(args: argparse.Namespace) -> int:
    uvicorn = require("uvicorn", "the optional extra: pip install 'soundsift[serve]'", "soundsift serve")

    from soundsift.search.access import is_loopback, serve_policy
    from soundsift.search.server import LOOPBACK_HOSTS, check_port, check_tls, create_app

    tls = check_tls(args.tls_cert, args.tls_key)
    policy, warnings = serve_policy(args.host, args.token, args.no_auth, args.cors, args.rate_limit, tls=tls)
    check_port(args.host, args.port)  # before loading the model: a busy port fails at once
    loopback = is_loopback(args.host)
    searcher = None
    if args.runtime:  # otherwise the runtime the index was built with
        from soundsift.search.index import load_searcher

        searcher = load_searcher(args.index, args.model, backend=args.backend, runtime=args.runtime)
    app = create_app(
        args.index, args.model, backend=args.backend, max_k=args.max_k, max_query_chars=args.max_query_chars,
        allowed_hosts=[*LOOPBACK_HOSTS, args.host] if loopback else None, access=policy, searcher=searcher,
    )
    for line in warnings:
        print(line, file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    auth = " (access token required)" if policy.token else ""
    print(f"serving {app.state.searcher.index.path} on http{'s' if tls else ''}://{host}:{args.port}/{auth} "
          "(Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if quiet(args) else "info",
                ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    return 0


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    from soundsift.search.index import BACKENDS

    """`soundsift serve INDEX [--host 127.0.0.1] [--port 8000] [--token TOKEN] [--cors ORIGIN]`."""
    p = subparsers.add_parser("serve", help="HTTP search API and web page for an index")
    p.add_argument("index", help="index directory")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: loopback only; any other needs --token or --no-auth)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--model", action="append", default=None,
                   help="model file (default: the one that built the index; repeated: the ensemble that built it)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="exact scan or FAISS (auto: exact up to 100k files, the stored FAISS index above)")
    p.add_argument("--max-k", type=positive_int, default=100, help="largest k a request may ask for")
    p.add_argument("--max-query-chars", type=positive_int, default=1000, help="longest query a request may send")
    p.add_argument("--token", default=None,
                   help="access token every request must carry (the page asks for it once); default: the "
                        "SOUNDSIFT_TOKEN environment variable, which keeps it out of the process list")
    p.add_argument("--no-auth", action="store_true",
                   help="serve beyond loopback without a token: anyone who can reach the address may search "
                        "and download the indexed files")
    p.add_argument("--cors", action="append", default=None, metavar="ORIGIN",
                   help="let pages from this origin (scheme://host[:port], or *) call the API from a browser; "
                        "repeat for several (default: no CORS)")
    p.add_argument("--rate-limit", type=non_negative_int, default=None, metavar="N",
                   help="requests a minute one client address may send, in bursts of as many; past it, 429 with "
                        "Retry-After (default: 600 when bound beyond loopback, none on loopback; 0: no limit)")
    p.add_argument("--tls-cert", default=None, metavar="PEM", help="serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="the private key of --tls-cert")
    add_runtime_option(p, recorded=True)
    p.set_defaults(func=serve_main)
    return p


# ------------------------------------------------------------------------------------------------ tag


def tag_main(args: argparse.Namespace) -> int:
    from soundsift.audio import audio_file_path
    from soundsift.checkpoints.runtime import load_for_runtime
    from soundsift.search.tag import parse_labels, tag_files

    labels = parse_labels(args.labels, args.labels_file)
    for f in args.files:
        audio_file_path(f)  # a typo fails before the model loads
    model = load_for_runtime(args.model or ["zero-shot"], args.runtime or "torch")
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
    add_runtime_option(p)
    p.set_defaults(func=tag_main)
    return p


#: the commands add_parsers registers (soundsift.cli.main builds only the group of the command run)
COMMANDS = ("index", "search", "serve", "tag")


def add_parsers(sub) -> None:
    for add in (add_index_parser, add_search_parser, add_serve_parser, add_tag_parser):
        add(sub)
