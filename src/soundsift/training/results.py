"""The results of a recipe as tables: our test metrics per step beside the paper's, the paired gain over
the model a step started from, an estimators recipe's measures, and a sweep's grid
(``results.json``, ``.md``, ``.csv``, ``.tex``; a ``training.recipe`` runner writes them from its steps'
results, ``training.report`` redraws them)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from soundsift.atomic import atomic_write
from soundsift.names import DCASE_COLUMNS
from soundsift.training.recipe_spec import MeasureSpec, TrainSpec
from soundsift.training.tables import Column, Table, to_markdown, write_table

COLUMNS = DCASE_COLUMNS
#: Also shown where a step has it: the DCASE 2025 multi-relevance mAP@16 (a run with ``data.relevance``).
MULTI_COLUMN = "mAP@16"
ALL_COLUMNS = (MULTI_COLUMN, *COLUMNS)
#: Columns of a ``measure`` recipe's stage-2 rows (percent): the estimate against the ground truth, and
#: the plain gain in test mAP@10 over init_from where the paired one (vs_init) is not available.
MEASURE_COLUMNS = ("AUC", "softmax_mass", "other_mass", "gain")


def yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


GAIN_COLUMN = "Δ vs stage 1 [95% CI]"  # mAP@10 of a step minus that of its init_from step, paired bootstrap
GAIN_NOTE = ("test mAP@10 minus that of the model it was initialised from, on the same queries, percentage "
             "points; the interval is a paired bootstrap over the test clips, each with all its captions "
             "(10000 resamples, seed 0).")


def results_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """The rows of ``results.json`` as a table: our test metrics (percent) per step, each source's
    mAP@10 (the paper, salsa's README) with our difference, and the paired gain over ``init_from``."""
    sources = sorted({k for row in rows for k in row
                      if not k.endswith("_diff") and k != "vs_init" and isinstance(row[k], dict)})
    gain = any("vs_init" in row for row in rows)
    shown = [c for c in ALL_COLUMNS if c != MULTI_COLUMN or any(c in row for row in rows)]
    columns = [Column("step", "text"), *(Column(c) for c in shown)]
    extra = [c for c in MEASURE_COLUMNS if any(c in row for row in rows)]  # a measure recipe's
    columns += [Column(c, "signed" if c == "gain" else "number") for c in extra]
    compared = [(s, m) for s in sources for m in (MULTI_COLUMN, "mAP@10")
                if m == "mAP@10" or any(m in row.get(s, {}) for row in rows)]
    for s, m in compared:
        columns += [Column(f"{s} {m}"), Column("diff", "signed")]
    table = Table(columns + ([Column(GAIN_COLUMN, "interval")] if gain else []), title=title)
    for row in rows:
        values: list[Any] = [row["step"], *(row.get(c) for c in shown), *(row.get(c) for c in extra)]
        for s, m in compared:
            values += [row.get(s, {}).get(m), row.get(f"{s}_diff", {}).get(m)]
        if gain:
            g = row.get("vs_init")
            values.append((g["mAP@10"], *g["bootstrap_ci95"]) if g else None)
        table.add(*values)
    return table


def format_results(recipe: Any, rows: list[dict[str, Any]], sweeps: dict[str, list]) -> str:
    """Markdown: our test metrics (percent) per step, the paper's, salsa's README, and the differences
    (``recipe``: a ``training.recipe.Recipe``; its title, name and measure settings are used)."""
    lines = [f"# {recipe.title or recipe.name}", "", "Test split, percent.", "", to_markdown(results_table(rows))]
    if any("vs_init" in row for row in rows):
        lines += ["", f"{GAIN_COLUMN}: {GAIN_NOTE}"]
    if any(c in row for c in MEASURE_COLUMNS for row in rows):
        m = recipe.measure or MeasureSpec()
        lines += ["", f"AUC: ROC AUC of a stage-2 run's targets against the ground truth (training split); "
                  f"softmax_mass: the mass their column softmax (tau {m.tau}, random batches of "
                  f"{m.batch_size} training pairs) puts on truly relevant clips; other_mass: the part on "
                  "relevant clips other than the caption's own (columns that have one)"
                  + ("; gain: test mAP@10 over the model it started from" if any("gain" in r for r in rows) else "")
                  + ". All percent."]
    for sid, grid in sweeps.items():
        lines += ["", f"## {sid}: grid (selected on validation mAP@10)", "",
                  "| point | values | val mAP@10 | test mAP@10 |", "|---|---|---:|---:|"]
        for g in grid:
            val, test = g["val"].get("mAP@10"), g["test"].get("mAP@10")
            lines.append(f"| {g['point']} | {yaml_value(g['values'])} | "
                         f"{'' if val is None else f'{100 * val:.2f}'} | {'' if test is None else f'{100 * test:.2f}'} |")
    return "\n".join(lines) + "\n"


def recipe_rows(runner: Any) -> list[dict[str, Any]]:
    """One row per step of ``runner`` (a ``training.recipe.Runner`` that ran) with test metrics: ours
    (percent) next to the paper's and the difference; a step that starts from another (``init_from``)
    also gets ``vs_init``, its paired mAP@10 gain over that step with 95% intervals (training.compare)."""
    rows = []
    for sid, result in runner.results.items():
        test = (result.get("metrics") or {}).get("test")
        if not test:
            continue
        multi = (result.get("metrics") or {}).get("test_multi") or {}
        test = {**test, **({MULTI_COLUMN: multi[MULTI_COLUMN]} if MULTI_COLUMN in multi else {})}
        step = runner.steps[sid]
        row = {"step": sid, **step.row, **{c: round(100 * float(test[c]), 2) for c in ALL_COLUMNS if c in test}}
        for source, numbers in step.expected.items():
            row[source] = {c: numbers[c] for c in ALL_COLUMNS if c in numbers}
            row[f"{source}_diff"] = {c: round(row[c] - numbers[c], 2) for c in ALL_COLUMNS if c in numbers and c in row}
        if (gain := gain_over_init(runner, sid, result)) is not None:
            row["vs_init"] = gain
        if runner.recipe.measure is not None:
            row.update(measured(runner, sid, row))
        rows.append(row)
    return rows


def measured(runner: Any, sid: str, row: dict[str, Any]) -> dict[str, Any]:
    """A stage-2 row's estimate (the scores of its one teachers step, percent) and, where the paired
    gain (vs_init) is missing, its plain gain in test mAP@10 over the model it started from."""
    spec, out = runner.steps[sid].spec, {}
    if runner.steps[sid].kind != "train":
        return out
    teachers = spec.teacher_steps()
    scores = (runner.results.get(teachers[0]) or {}).get("correspondences") if len(teachers) == 1 else None
    if scores:
        out.update({k: round(100 * float(scores[s]), 2) for k, s in
                    (("AUC", "auc"), ("softmax_mass", "softmax_mass"), ("other_mass", "other_mass"))})
    base = ((runner.results.get(spec.init_from or "") or {}).get("metrics") or {}).get("test") or {}
    if "vs_init" not in row and "mAP@10" in base and "mAP@10" in row:
        out["gain"] = round(row["mAP@10"] - 100 * float(base["mAP@10"]), 2)
    return out


def gain_over_init(runner: Any, sid: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """The paired difference in test mAP@10 (percentage points) of a train step or a sweep's best
    point over the step it was initialised from, when both saved per-query results."""
    from soundsift.training.compare import gain_percent

    spec = runner.steps[sid].spec
    init = spec.init_from if isinstance(spec, TrainSpec) else None  # a sweep too
    if not isinstance(init, str):
        return None
    gain = gain_percent(runner.out / init, runner.out / str(result.get("best", sid)))
    return None if gain is None else {"step": init, **gain}


def write_results(runner: Any) -> dict[str, Any]:
    """``results.json``, ``.md``, ``.csv`` and ``.tex`` of a runner's steps in its ``out`` folder."""
    rows = recipe_rows(runner)
    summary = {"recipe": runner.recipe.name, "rows": rows,
               "sweeps": {sid: r["grid"] for sid, r in runner.results.items() if "grid" in r}}
    text = json.dumps(summary, indent=2)
    atomic_write(runner.out / "results.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    md = format_results(runner.recipe, rows, summary["sweeps"])
    atomic_write(runner.out / "results.md", lambda tmp: tmp.write_text(md, encoding="utf-8"))
    write_table(results_table(rows, runner.recipe.title or runner.recipe.name), runner.out / "results", ("csv", "tex"))
    return summary
