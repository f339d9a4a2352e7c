"""Training workflows: ``train``, ``teachers``, ``evaluate``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys

from soundsift.cli.common import add_runtime_option, dataset_args, quiet
from soundsift.errors import ConfigError
from soundsift.names import TEST_SPLIT, TRAIN_SPLIT


def train_main(args: argparse.Namespace) -> int:
    from soundsift.config import load_config

    config = load_config(args.config, args.overrides)
    if args.dry_run:
        from soundsift.training.dry_run import dry_run

        return dry_run(config, pretrained=not args.no_pretrained)
    from soundsift.training.run import train

    result = train(config, progress=not quiet(args), overwrite=args.overwrite, resume=args.resume)
    if result.metrics:  # only the process of rank 0 reports
        print(json.dumps({"model": str(result.model_path), **result.metrics.get("test", {})}, indent=2))
    return 0


def teachers_main(args: argparse.Namespace) -> int:
    from soundsift.training.estimators import EstimateOptions, write_estimate

    path = write_estimate(args.estimator, EstimateOptions(
        args.data_root, args.out, args.format, args.split, args.model, args.teachers, args.weights,
        args.text_model, args.max_seconds, args.batch_size, args.half, progress=not quiet(args),
    ))
    print(f"wrote teacher embeddings of {args.split} ({args.estimator}) to {path}")
    return 0


def evaluate_main(args: argparse.Namespace) -> int:
    if args.task == "moments":
        return evaluate_moments_main(args)
    if not args.model or not args.data_root:
        raise ConfigError("evaluate: --model and --data-root are required (except with --task moments)")
    from soundsift.training.evaluate import evaluate

    result = evaluate(
        args.model, args.data_root, args.format, args.split, args.max_seconds, args.batch_size,
        args.submission, progress=not quiet(args), relevance=args.relevance, any_query=args.any_query,
        runtime=args.runtime or "torch",
    )
    multi = result.get("multi_relevance")
    if multi and multi["left_out"]:
        reasons = ", ".join(f"{n} {why}" for why, n in multi["left_out_reasons"].items())
        print(f"{args.relevance}: left out {multi['left_out']} of {multi['left_out'] + multi['n_queries']} "
              f"queries ({reasons}); e.g. {multi['left_out_examples'][0]}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def evaluate_moments_main(args: argparse.Namespace) -> int:
    if args.data_root and not args.predictions:
        from soundsift.training.evaluate_moments import evaluate_moment_baseline

        print(json.dumps(evaluate_moment_baseline(args.model, args.data_root, args.split, args.window, args.hop,
                                                  args.out, args.batch_size, args.baseline,
                                                  moment_model=args.moment_model, skip_invalid=args.skip_invalid),
                         indent=2))
        return 0
    if not args.predictions or not args.annotations:
        raise ConfigError("evaluate --task moments: give --predictions PRED.jsonl and --annotations GT.jsonl, "
                          "or --model M (or --baseline random) and --data-root DIR")
    from soundsift.training.evaluate_moments import evaluate_moments

    print(json.dumps(evaluate_moments(args.predictions, args.annotations, args.skip_invalid), indent=2))
    return 0


def demo_main(args: argparse.Namespace) -> int:
    from soundsift.training.demo import format_table, run_demo

    summary = run_demo(args.out, seed=args.seed, preset=args.preset, overrides=tuple(args.overrides),
                       progress=not quiet(args), control=not args.no_control, seeds=args.seeds)
    for block in summary["per_seed"]:
        print(f"seed {block['seed']}:\n{format_table(block['rows'])}")
        if block.get("correspondence_auc"):
            auc = ", ".join(f"{k} {v:.3f}" for k, v in block["correspondence_auc"].items())
            print(f"estimated correspondences vs ground truth (training split, ROC AUC): {auc}\n")
    if summary["pooled"]:
        print(f"pooled over seeds {' '.join(map(str, summary['seeds']))}:\n{format_table(summary['pooled'])}")
    print(f"\n{summary['seconds']} s; results in {args.out}/results.md (how to read it) and results.json")
    return 0


def reproduce_main(args: argparse.Namespace) -> int:
    from soundsift.training.recipe import Runner, check_train_configs, load_recipe, plan
    from soundsift.training.results import format_results

    name, *overrides = args.recipe
    recipe = load_recipe(name)
    check_train_configs(recipe)
    runner = Runner(recipe, args.out or f"runs/{recipe.name}", args.data_root, include=args.include,
                    only=args.only, progress=not quiet(args), overrides=overrides)
    if args.print:
        print("\n".join(runner.commands()))
        print(f"# after these, this collects the results: {runner.collect_command()}", file=sys.stderr)
        return 0
    if args.dry_run:
        print("\n".join(plan(recipe, runner)))
        return 0
    if args.launcher == "slurm":
        from soundsift.training.launch import launch_slurm

        launch_slurm(runner, args.slurm_folder, local=args.slurm_local)
        return 0
    runner.run()
    summary = runner.write_results()
    print(summary["table"] if recipe.task == "moments" else format_results(recipe, summary["rows"], summary["sweeps"]))
    print(f"results in {runner.out}/results.json and results.md", file=sys.stderr)
    return 0


def train_moments_main(args: argparse.Namespace) -> int:
    from soundsift.training.moment_options import MomentTrainOptions
    from soundsift.training.moment_train import train_moments

    options = MomentTrainOptions(hidden=args.hidden, steps=args.steps, lr=args.lr, seed=args.seed,
                                 loss_weight=args.loss_weight, distill_weight=args.distill_weight, tau=args.tau)
    print(json.dumps(train_moments(args.model, args.data_root, args.out, args.window, args.hop, options,
                                   args.batch_size, None if args.no_eval else "test", args.teacher,
                                   args.skip_invalid), indent=2))
    return 0


#: the commands add_parsers registers (soundsift.cli.main builds only the group of the command run)
COMMANDS = ("train", "teachers", "train-moments", "evaluate", "reproduce", "demo")


def add_parsers(sub) -> None:
    p = sub.add_parser("train", overrides_dest="overrides", help="train (stage 1 or stage 2) from a YAML config")
    p.add_argument("--config", required=True, help="YAML file, or a packaged one such as demo/stage1.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.epochs=3")
    p.add_argument("--dry-run", action="store_true", help="build, print config and sizes, one step")
    p.add_argument("--no-pretrained", action="store_true", help="with --dry-run: random weights, no network")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="out_dir holds a finished run: train it again from scratch")
    again.add_argument("--resume", action="store_true",
                       help="out_dir holds a finished run: continue from its last checkpoint (e.g. more optim.epochs)")
    p.set_defaults(func=train_main)

    from soundsift.config import estimator_names

    p = sub.add_parser("teachers", help="estimate a training split's correspondences: teacher data for stage 2")
    p.add_argument("--estimator", default="ensemble", metavar="NAME",
                   help=f"correspondence estimator: {', '.join(estimator_names())} (default ensemble: the mean "
                        "similarity of the teachers; with one --model, that model's embeddings)")
    p.add_argument("--model", action="append", default=[],
                   help="a soundsift model file (model.pt) or published name (zero-shot); repeat it for an ensemble")
    p.add_argument("--teachers", nargs="+", default=[], metavar="FILE", help="teacher files to combine (ensemble, mix)")
    p.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="mix: one weight > 0 per teacher (the --teachers files, then the --model models)")
    p.add_argument("--text-model", default="minilm",
                   help="caption-similarity: a text encoder name (minilm) or a soundsift model (its text tower)")
    p.add_argument("--out", required=True, help="output .safetensors file (any other path: a teacher store)")
    dataset_args(p, TRAIN_SPLIT)
    p.add_argument("--half", action="store_true", help="store float16 embeddings")
    p.set_defaults(func=teachers_main)

    from soundsift.training.moment_options import MomentTrainOptions
    from soundsift.training.moment_train import LEARNED_HOP, LEARNED_WINDOW

    defaults = MomentTrainOptions()

    p = sub.add_parser("train-moments", help="train the learned moment model over a model's window embeddings "
                                             "(a synth --moments benchmark; docs/moments.md)")
    p.add_argument("--data-root", required=True,
                   help="a moment benchmark: synth --moments output, or Clotho-Moment / CASTELLA as published "
                        "(docs/moments.md); invalid training annotations are skipped and reported")
    p.add_argument("--model", default="zero-shot", help="the frozen soundsift model whose window embeddings it reads")
    p.add_argument("--out", required=True, metavar="RUN", help="folder for moment_model.pt, predictions, result.json")
    p.add_argument("--window", type=float, default=LEARNED_WINDOW, help="window seconds (default %(default)s)")
    p.add_argument("--hop", type=float, default=LEARNED_HOP, help="hop seconds (default %(default)s)")
    p.add_argument("--steps", type=int, default=defaults.steps, help="training steps (default %(default)s)")
    p.add_argument("--hidden", type=int, default=defaults.hidden, help="hidden channels (default %(default)s)")
    p.add_argument("--lr", type=float, default=defaults.lr, help="learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and batch order")
    p.add_argument("--loss-weight", type=float, default=defaults.loss_weight,
                   help="weight of the supervised relevance term (default %(default)s)")
    p.add_argument("--distill-weight", type=float, default=defaults.distill_weight,
                   help="weight of the soft targets' term: the estimated correspondences over the windows "
                        "(default %(default)s)")
    p.add_argument("--teacher", action="append", default=[], metavar="MODEL",
                   help="a soundsift model whose query-window similarities make the soft targets; repeat it for "
                        "an ensemble (default: --model itself, self-distillation)")
    p.add_argument("--tau", type=float, default=defaults.tau, help="the soft targets' temperature (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="embedding batch size")
    p.add_argument("--no-eval", action="store_true", help="do not predict and score the test split")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip and report invalid test annotations instead of refusing the file")
    p.set_defaults(func=train_moments_main)

    p = sub.add_parser("evaluate", help="retrieval metrics of a model on a dataset split, or of moment predictions")
    p.add_argument("--task", choices=("retrieval", "moments"), default="retrieval",
                   help="moments: score --predictions against --annotations (DCASE 2026 task 6; docs/moments.md)")
    p.add_argument("--predictions", default=None, metavar="PRED.jsonl", help="--task moments: predicted windows")
    p.add_argument("--annotations", default=None, metavar="GT.jsonl", help="--task moments: true windows")
    p.add_argument("--baseline", choices=("window", "learned", "random"), default=None,
                   help="--task moments with --data-root: learned (the model train-moments saved; chosen "
                        "when --moment-model is given), window (a sliding window over --model; chosen "
                        "otherwise) or random (random windows)")
    p.add_argument("--moment-model", default=None, metavar="RUN/moment_model.pt",
                   help="--baseline learned: the moment model train-moments saved")
    p.add_argument("--window", type=float, default=None, help="--task moments: window seconds (default: the model's)")
    p.add_argument("--hop", type=float, default=None, help="--task moments: hop seconds (default: half the window)")
    p.add_argument("--out", default=None, metavar="PRED.jsonl",
                   help="--task moments with --data-root: where to write the predictions")
    p.add_argument("--skip-invalid", action="store_true",
                   help="--task moments: leave out invalid annotation lines (each reported on stderr, and their "
                        "count) instead of refusing the file")
    p.add_argument("--model", action="append",
                   help="model.pt, a save_pretrained folder, a salsa checkpoint, or 'salsa' (the authors' released "
                        "model); repeat it for an ensemble (mean cosine similarity; reports each member and the gain)")
    dataset_args(p, TEST_SPLIT, data_root_required=False)
    p.add_argument("--submission", default=None, help="also write a DCASE submission CSV here")
    p.add_argument("--relevance", default=None, metavar="FILE",
                   help="a multi-relevance CSV (DCASE 2025 query,audio_filenames or query,file pairs): adds "
                        "multi_relevance (mAP@16 as the challenge ranked, mAP@k_min_k, R@k)")
    p.add_argument("--any-query", action="store_true",
                   help="with --relevance: score queries that are not captions of the split too")
    add_runtime_option(p)
    p.set_defaults(func=evaluate_main)

    p = sub.add_parser("reproduce", overrides_dest="recipe", help="run a recipe (a paper table) step by step, skipping finished steps")
    p.add_argument("recipe", nargs="+", metavar="RECIPE [key=value ...]",
                   help="a recipe file or a packaged one (demo, table1, table2, moments), then config overrides "
                        "applied to every train step, e.g. optim.epochs=1 (moments: steps=100)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder (default: the recipe's data_root; a generating recipe writes OUT/data); "
                        "moments: Clotho-Moment or CASTELLA as published")
    p.add_argument("--out", default=None, help="folder of all runs and results.json/.md (default: runs/RECIPE)")
    p.add_argument("--only", nargs="+", default=[], metavar="STEP", help="run these steps (and what they need)")
    p.add_argument("--include", nargs="+", default=[], metavar="GROUP",
                   help="also run the recipe's optional steps of these groups (demo: control)")
    p.add_argument("--print", action="store_true", help="print the steps as shell commands instead of running them")
    p.add_argument("--dry-run", action="store_true", help="list the steps and whether each would run or is done")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: run here, one step after the other; slurm: one job per step (submitit)")
    p.add_argument("--slurm-folder", default="runs/slurm", help="where submitit keeps job scripts and logs")
    p.add_argument("--slurm-local", action="store_true", help="run the jobs with submitit's local executor (tests)")
    p.set_defaults(func=reproduce_main)

    p = sub.add_parser("demo", overrides_dest="overrides", help="the whole method end to end on the generated benchmark")
    p.add_argument("--out", default="runs/demo", help="folder for the benchmark, the twelve runs and results.json/.md")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=0, help="seed of the benchmark and of every run")
    which.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="run these seeds one after the other (OUT/seed-N) and pool their gains")
    p.add_argument("--preset", default="small", help="benchmark size: tiny | small | medium | large")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control rows (stage2-sup: stage 2's schedule with L_sup alone)")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every run")
    p.set_defaults(func=demo_main)
