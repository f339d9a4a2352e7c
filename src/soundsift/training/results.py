"""The results of a recipe as tables: our test metrics per step beside the paper's, the paired gain over
the model a step started from, an estimators recipe's measures, and a sweep's grid
(``results.md``, ``.csv``, ``.tex``; ``training.recipe`` writes them, ``training.report`` redraws them)."""

from __future__ import annotations

from typing import Any

import yaml

from soundsift.names import DCASE_COLUMNS
from soundsift.training.tables import Column, Table, to_markdown

COLUMNS = DCASE_COLUMNS
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
    columns = [Column("step", "text"), *(Column(c) for c in COLUMNS)]
    extra = [c for c in MEASURE_COLUMNS if any(c in row for row in rows)]  # a measure recipe's
    columns += [Column(c, "signed" if c == "gain" else "number") for c in extra]
    for s in sources:
        columns += [Column(f"{s} mAP@10"), Column("diff", "signed")]
    table = Table(columns + ([Column(GAIN_COLUMN, "interval")] if gain else []), title=title)
    for row in rows:
        values: list[Any] = [row["step"], *(row.get(c) for c in COLUMNS), *(row.get(c) for c in extra)]
        for s in sources:
            values += [row.get(s, {}).get("mAP@10"), row.get(f"{s}_diff", {}).get("mAP@10")]
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
        m = recipe.measure or {}
        lines += ["", f"AUC: ROC AUC of a stage-2 run's targets against the ground truth (training split); "
                  f"softmax_mass: the mass their column softmax (tau {m.get('tau', 0.05)}, random batches of "
                  f"{m.get('batch_size', 64)} training pairs) puts on truly relevant clips; other_mass: the part on "
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
