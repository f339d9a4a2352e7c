"""The steps of a moment recipe (``task: moments``, e.g. ``reproduce moments``) for the recipe runner
(``training.recipe``): what a ``moments`` and a ``train_moments`` step do, their plain commands for
``--print``, and the results table with paired intervals against the recipe's ``reference`` step.

Outputs under the run folder: a ``moments`` step writes its predictions ``{id}.jsonl`` and metrics
``{id}.json`` (what ``evaluate --task moments`` prints); a ``train_moments`` step ``{id}/moment_model.pt``
and ``{id}/result.json``. Overrides given to ``reproduce`` (``steps=2``) set ``MomentTrainOptions``
fields of every ``train_moments`` step.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from soundsift.atomic import atomic_write
from soundsift.errors import ConfigError
from soundsift.training.moment_options import MomentTrainOptions
from soundsift.training.recipe_spec import MomentsSpec, Step, TrainMomentsSpec

OPTION_FIELDS = {f.name: f for f in dataclasses.fields(MomentTrainOptions)}
SPEC_OPTIONS = ("steps", "hidden", "lr", "seed", "loss_weight", "distill_weight", "tau")


def train_options(spec: TrainMomentsSpec, overrides: list[str]) -> MomentTrainOptions:
    """The step's ``MomentTrainOptions``: the defaults, the step's settings, then ``key=value`` overrides."""
    values: dict[str, Any] = {k: getattr(spec, k) for k in SPEC_OPTIONS if getattr(spec, k) is not None}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in OPTION_FIELDS:
            raise ConfigError(f"{item}: a moment recipe takes key=value overrides of {', '.join(OPTION_FIELDS)}")
        value = yaml.safe_load(raw)
        kind = float if OPTION_FIELDS[key].type in ("float", float) else int
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            raise ConfigError(f"{item}: {key} must be {'an integer' if kind is int else 'a number'}")
        values[key] = kind(value)
    return MomentTrainOptions(**values)


def model_file(runner: Any, sid: str) -> Path:
    return runner.out / sid / "moment_model.pt"


def _windows(spec: TrainMomentsSpec) -> tuple[float, float]:
    from soundsift.training.moment_train import LEARNED_HOP, LEARNED_WINDOW

    return (float(spec.window) if spec.window is not None else LEARNED_WINDOW,
            float(spec.hop) if spec.hop is not None else LEARNED_HOP)


def execute(runner: Any, step: Step, sid: str) -> dict[str, Any]:
    """Run one moment step; its result (metrics of a ``moments`` step) for the runner's record."""
    spec = step.spec
    if isinstance(spec, TrainMomentsSpec):
        from soundsift.training.moment_train import train_moments

        window, hop = _windows(spec)
        result = train_moments(spec.model, runner.data_root, runner.out / sid, window, hop,
                               train_options(spec, runner.overrides), spec.batch_size, None, spec.teachers or ())
        return {"train": {k: result[k] for k in ("train_queries", "loss_first", "loss_last", "teachers")}}
    assert isinstance(spec, MomentsSpec)
    from soundsift.training.evaluate_moments import evaluate_moment_baseline

    metrics = evaluate_moment_baseline(
        spec.model, runner.data_root, spec.split, None if spec.window is None else float(spec.window),
        None if spec.hop is None else float(spec.hop), runner.out / f"{sid}.jsonl", spec.batch_size, spec.baseline,
        0, model_file(runner, spec.moment_model) if spec.moment_model else None, spec.skip_invalid)
    text = json.dumps(metrics, indent=2) + "\n"
    atomic_write(runner.out / f"{sid}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return {"metrics": _summary(metrics)}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("split", "R1@0.5", "R1@0.7", "mAP@0.5", "mAP@0.75", "mAP", "n_queries")}


def adoptable(runner: Any, step: Step, sid: str) -> dict[str, Any] | None:
    """The result of outputs the printed commands made for this step, if they are all there."""
    if step.kind == "train_moments":
        done = (runner.out / sid / "result.json").is_file() and model_file(runner, sid).is_file()
        return {"train": {}} if done else None
    output = runner.out / f"{sid}.json"
    if not (output.is_file() and (runner.out / f"{sid}.jsonl").is_file()):
        return None
    return {"metrics": _summary(json.loads(output.read_text(encoding="utf-8")))}


def commands(runner: Any) -> list[str]:
    """The selected steps as ``soundsift train-moments`` / ``evaluate --task moments`` commands."""
    q, lines = shlex.quote, []
    for step in runner.selected():
        spec, data = step.spec, ["--data-root", q(runner.data_root)]
        if isinstance(spec, TrainMomentsSpec):
            window, hop = _windows(spec)
            options = train_options(spec, runner.overrides)
            flags = [f"--{k.replace('_', '-')} {getattr(options, k)}" for k in SPEC_OPTIONS
                     if getattr(options, k) != getattr(MomentTrainOptions(), k)]
            flags += [f"--teacher {q(t)}" for t in spec.teachers or ()]
            lines.append(" ".join(["soundsift", "-q", "train-moments", *data, "--model", q(spec.model), "--window",
                                   f"{window:g}", "--hop", f"{hop:g}", *flags, "--out", q(str(runner.out / step.id)),
                                   "--no-eval"]))
            continue
        assert isinstance(spec, MomentsSpec)
        args = ["--baseline", spec.baseline, *data, "--split", q(spec.split)]
        args += ["--model", q(spec.model)] if spec.model else []
        args += ["--moment-model", q(str(model_file(runner, spec.moment_model)))] if spec.moment_model else []
        args += [f"--window {spec.window:g}"] if spec.window is not None else []
        args += [f"--hop {spec.hop:g}"] if spec.hop is not None else []
        args += ["--skip-invalid"] if spec.skip_invalid else []
        lines.append(" ".join(["soundsift", "-q", "evaluate", "--task", "moments", *args, "--out",
                               q(str(runner.out / f"{step.id}.jsonl")), ">", q(str(runner.out / f"{step.id}.json"))]))
    return lines


def _label(step: Step) -> str:
    return str(step.row.get("system", step.id))


def results(runner: Any) -> dict[str, Any]:
    """One row per ``moments`` step (its metrics), a row per group of steps sharing ``row: {system}`` (the
    per-query mean over the group, e.g. over seeds), and each row's paired interval against the
    recipe's ``reference`` step on the same split (difference row - reference)."""
    from soundsift.data.readers.moment_layout import load_moment_split
    from soundsift.data.readers.moments import read_moment_predictions
    from soundsift.training.moment_compare import KEYS, compare, per_query

    steps = [s for s in runner.selected() if s.kind == "moments"]
    values: dict[str, dict[str, np.ndarray]] = {}
    rows: list[dict[str, Any]] = []
    for step in steps:
        data, recordings = load_moment_split(runner.data_root, step.spec.split, step.spec.skip_invalid,
                                             log=lambda message: None)
        queries = [q for r in recordings for q in r.queries]
        predicted = read_moment_predictions(runner.out / f"{step.id}.jsonl")
        values[step.id] = per_query([q.windows for q in queries], [predicted.get(q.qid) for q in queries])
        rows.append({"system": _label(step), "steps": [step.id], "split": data.split, "n_queries": len(queries)})
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["system"], row["split"]), []).append(row)
    for (system, split), members in groups.items():
        if len(members) > 1:
            ids = [m["steps"][0] for m in members]
            key = f"{system} (mean of {len(ids)})"
            values[key] = {k: np.mean([values[i][k] for i in ids], axis=0) for k in KEYS}
            rows.insert(rows.index(members[-1]) + 1, {"system": key, "steps": ids, "split": split,
                                                      "n_queries": members[0]["n_queries"], "mean_of": ids})
    reference = runner.recipe.reference if runner.recipe.reference in values else None
    ref_split = next((r["split"] for r in rows if r["steps"] == [reference]), None)
    for row in rows:
        name = row["system"] if "mean_of" in row else row["steps"][0]
        row.update({k: round(float(np.mean(values[name][k])), 2) for k in KEYS})
        if reference and name != reference and row["split"] == ref_split:
            row["vs_reference"] = {k: {"difference": c["B-A"], "95% CI": c["95% CI"]}
                                   for k, c in compare(values[reference], values[name]).items()}
    return {"recipe": runner.recipe.name, "data_root": str(runner.data_root), "reference": reference, "rows": rows}


def format_results(recipe: Any, summary: dict[str, Any]) -> str:
    """The results as a Markdown table: metrics, then each row's difference from the reference with its
    95 % interval."""
    from soundsift.training.moment_compare import KEYS

    ref = summary["reference"]
    head = ["system", "steps", "split", *KEYS] + ([f"{k} - {ref} [95 % CI]" for k in ("R1@0.5", "R1@0.7", "mAP")]
                                                  if ref else [])
    lines = [f"# {recipe.title or recipe.name}", "",
             f"Data: `{summary['data_root']}`. Percent; R1 and mAP as lighthouse's standalone_eval computes them. "
             + (f"Intervals: paired bootstrap over queries (10,000 resamples) of the difference from `{ref}`."
                if ref else ""), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        cells = [row["system"], ", ".join(row["steps"]), row["split"], *(f"{row[k]:.2f}" for k in KEYS)]
        if ref:
            diff = row.get("vs_reference")
            cells += [f"{diff[k]['difference']:+.2f} [{diff[k]['95% CI'][0]:.2f}, {diff[k]['95% CI'][1]:.2f}]"
                      if diff else "" for k in ("R1@0.5", "R1@0.7", "mAP")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(runner: Any) -> dict[str, Any]:
    """``results.json`` and ``results.md`` of a moment recipe's run (``results``, ``format_results``)."""
    summary = results(runner)
    text, md = json.dumps(summary, indent=2), format_results(runner.recipe, summary)
    atomic_write(runner.out / "results.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    atomic_write(runner.out / "results.md", lambda tmp: tmp.write_text(md, encoding="utf-8"))
    summary["table"] = md
    return summary
