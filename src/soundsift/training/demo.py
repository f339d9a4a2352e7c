"""The whole method end to end on the generated benchmark: the layout of the paper's Table 1.

synth (small) -> the recipe ``recipes/demo.yaml`` (stage 1 for three audio encoders -> teacher
embeddings -> stage 2 with the ensemble of all three (M=3), with self-distillation (M=1) and, as the
control, stage 2's schedule with L_sup alone, for each encoder) through the same runner as
``soundsift reproduce`` -> test results table. Every row reports single-relevance mAP@10 (the caption's
own clip) and multi-relevance mAP@16 (every clip the caption truly describes, the DCASE 2025 formula);
every stage-2 row its paired gain over stage 1 and over the control. Several seeds (``seeds``) run one
after the other into ``out/seed-N`` and the gains are also pooled over them (demo_gains). Finished steps
are skipped when the demo runs again with the same settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from soundsift.names import DCASE_COLUMNS, TRAIN_SPLIT
from soundsift.training.tables import Column, Table, to_markdown

ENCODERS = ("cnn", "patchformer", "crnn")
VARIANTS = ("stage1", "stage2-ensemble", "stage2-self")
CONTROL = "stage2-sup"
COLUMNS = ("mAP@10", "mAP@16", *(c for c in DCASE_COLUMNS if c != "mAP@10"))
REFERENCES = (("stage1", "stage 1"), ("control", "control"))  # (key in a row's gains, column label)
GAIN_METRICS = ("mAP@10", "mAP@16")


def gain_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(reference key, metric, column name) of every gain some row has."""
    return [(ref, m, f"Δ {m} vs {label} [95% CI]") for ref, label in REFERENCES for m in GAIN_METRICS
            if any(m in ((row.get("gains") or {}).get(ref) or {}) for row in rows)]


def demo_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """One row per (encoder, variant), metrics in percent, and each stage-2 row's paired gains over
    stage 1 and over the control (``gains``: reference -> metric -> [difference, low, high])."""
    gains = gain_columns(rows)
    present = [c for c in COLUMNS if any(c in row for row in rows)]
    columns = [Column("encoder", "text"), Column("variant", "text"), *(Column(c) for c in present)]
    table = Table(columns + [Column(name, "interval") for *_, name in gains], title=title)
    for i, row in enumerate(rows):
        if i and row["encoder"] != rows[i - 1]["encoder"]:
            table.breaks.add(i)
        g = row.get("gains") or {}
        extra = [tuple(g[ref][m]) if m in (g.get(ref) or {}) else None for ref, m, _ in gains]
        table.add(row["encoder"], row["variant"], *(row.get(c) for c in present), *extra)
    return table


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per (encoder, variant), metrics in percent."""
    return to_markdown(demo_table(rows))


def teacher_auc(data_root: Path, teachers: dict[str, Path]) -> dict[str, float] | None:
    """ROC AUC of each teacher's and the ensemble's estimated correspondences against the benchmark's
    ground truth (does a caption truly describe a clip?) on the training split; None if not alignable."""
    import torch

    from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble, correspondence_auc
    from soundsift.data.synth.benchmark import load_ground_truth

    loaded = {name: TeacherEmbeddings.load(path) for name, path in teachers.items()}
    truth = load_ground_truth(data_root, TRAIN_SPLIT)
    first = next(iter(loaded.values()))
    if first.clip_ids != [str(f) for f in truth["file_names"]] or len(first.caption_texts) != truth["holds"].shape[0]:
        return None  # some clips were skipped: the orders differ
    holds = torch.from_numpy(truth["holds"]).T  # (n_clips, n_captions), like a similarity matrix
    auc = {name: correspondence_auc(t.similarity(), holds) for name, t in loaded.items()}
    if len(loaded) > 1:
        auc["ensemble"] = correspondence_auc(TeacherEnsemble(list(loaded.values())).full_similarity(), holds)
    return {k: round(v, 4) for k, v in auc.items()}


def _variants(control: bool) -> tuple[str, ...]:
    return (*VARIANTS, CONTROL) if control else VARIANTS


def _gains(runs: dict[tuple[str, str], list[Path]], enc: str, variant: str) -> dict[str, Any]:
    from soundsift.training.demo_gains import run_gains

    refs = {"stage1": (enc, "stage1"), "control": (enc, CONTROL)}
    out = {}
    for key, ref in refs.items():
        if variant != "stage1" and ref != (enc, variant) and ref in runs:
            out[key] = run_gains(runs[ref], runs[enc, variant])
    return {k: v for k, v in out.items() if v}


def _generated(data_root: Path, preset: str, seed: int) -> bool:
    """Whether ``data_root`` holds a finished benchmark of this preset and seed (synth_info.json is
    written last, atomically, so its presence means every other file is complete)."""
    from soundsift.data.synth.benchmark import FORMAT_VERSION, resolve_preset

    try:
        info = json.loads((data_root / "synth_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    p = resolve_preset(preset)
    sizes = {split: (info.get("splits") or {}).get(split, {}).get("clips") for split in ("development", "validation", "evaluation")}
    return (info.get("format_version") == FORMAT_VERSION and info.get("preset") == preset and info.get("seed") == seed
            and info.get("caption_style") == p.style and info.get("duration_s") == p.duration
            and sizes == {"development": p.development, "validation": p.validation, "evaluation": p.evaluation})


def run_seed(out: Path, seed: int, preset: str, overrides: tuple[str, ...], progress: bool,
             control: bool) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, float] | None]:
    """One seed of the demo into ``out``: per (encoder, variant) its test metrics, run folder and
    checkpoint, and the teachers' correspondence AUC."""
    from soundsift.data.synth.benchmark import RELEVANCE_FILE, generate
    from soundsift.training.recipe import Runner, load_recipe

    data_root = out / "data"
    if not _generated(data_root, preset, seed):
        generate(data_root, preset=preset, seed=seed, progress=progress)
    runner = Runner(load_recipe("demo"), out, data_root, include={"control"} if control else (),
                    progress=progress, overrides=[f"seed={seed}", f"data.relevance={RELEVANCE_FILE}", *overrides])
    results = runner.run()
    by_row = {(s.row["encoder"], s.row["variant"]): s.id for s in runner.steps.values() if s.row}
    found = {}
    for enc in ENCODERS:
        for variant in _variants(control):
            sid = by_row[enc, variant]
            metrics = results[sid]["metrics"]
            test = {**metrics["test"], **({"mAP@16": metrics["test_multi"]["mAP@16"]} if "test_multi" in metrics else {})}
            found[enc, variant] = {"metrics": {c: round(100 * test[c], 2) for c in COLUMNS if c in test},
                                   "run": out / sid, "checkpoint": str(runner.model_path(sid))}
    auc = teacher_auc(data_root, {enc: runner.teacher_path(f"teachers-{enc}") for enc in ENCODERS})
    return found, auc


def run_demo(
    out: str | Path,
    seed: int = 0,
    preset: str = "small",
    overrides: tuple[str, ...] = (),
    progress: bool = True,
    control: bool = True,
    seeds: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out`` (with several ``seeds``: ``out/seed-N`` each, then the pooled table);
    returns the results dict also written to results.json and, as tables, results.md/csv/tex.

    ``control`` runs "stage2-sup" per encoder: stage 2's schedule with L_sup alone and no teachers (the
    paper's Table 2, row 2), which separates the effect of the estimated correspondences from that of
    simply training longer.
    """
    started = time.time()
    out = Path(out)
    seeds = tuple(seeds) if seeds else (int(seed),)
    per_seed, runs = [], {}
    for s in seeds:
        folder = out if len(seeds) == 1 else out / f"seed-{s}"
        found, auc = run_seed(folder, s, preset, overrides, progress, control)
        per_seed.append((s, found, auc))
        for key, value in found.items():
            runs.setdefault(key, []).append(value["run"])
    seed_rows = []
    for s, found, auc in per_seed:
        rows = []
        for (enc, variant), value in found.items():
            single = {key: [run] for key, run in ((k, v["run"]) for k, v in found.items())}
            rows.append({"encoder": enc, "variant": variant, **value["metrics"],
                         "gains": _gains(single, enc, variant), "checkpoint": value["checkpoint"]})
        seed_rows.append({"seed": s, "rows": rows, "correspondence_auc": auc})
    pooled = []
    if len(seeds) > 1:
        for (enc, variant), value in per_seed[0][1].items():
            means = {c: round(sum(f[enc, variant]["metrics"][c] for _, f, _ in per_seed) / len(seeds), 2)
                     for c in value["metrics"]}
            pooled.append({"encoder": enc, "variant": variant, **means, "gains": _gains(runs, enc, variant)})
    summary = {"seeds": list(seeds), "preset": preset, "control": control, "per_seed": seed_rows,
               "pooled": pooled, "seconds": round(time.time() - started, 1)}
    if len(seeds) == 1:  # the single-seed form `soundsift report` and older readers know
        summary.update(seed=seeds[0], rows=seed_rows[0]["rows"], correspondence_auc=seed_rows[0]["correspondence_auc"])
    write_demo_results(out, summary)
    return summary


def write_demo_results(out: Path, summary: dict[str, Any]) -> None:
    """results.json, results.md (every table) and results.csv/.tex (the pooled or only table)."""
    from soundsift.atomic import atomic_write
    from soundsift.training.demo_gains import NOTE
    from soundsift.training.tables import write_table

    text = json.dumps(summary, indent=2)
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    preset, seeds = summary["preset"], summary["seeds"]
    md = f"# soundsift demo (seeds {', '.join(map(str, seeds))}, preset {preset}, {summary['seconds']} s)\n"
    for block in summary["per_seed"]:
        md += f"\n## seed {block['seed']}\n\n{format_table(block['rows'])}\n"
        if block["correspondence_auc"]:
            md += ("\nEstimated correspondences on the training split against the benchmark's ground truth "
                   "(ROC AUC): " + ", ".join(f"{k} {v:.3f}" for k, v in block["correspondence_auc"].items()) + "\n")
    if summary["pooled"]:
        md += f"\n## pooled over seeds {', '.join(map(str, seeds))} (metrics: mean over seeds)\n\n"
        md += format_table(summary["pooled"]) + "\n"
    md += ("\nmAP@10: the caption's own clip is the one relevant clip (DCASE up to 2024); mAP@16: every clip "
           "the caption truly describes is relevant (the benchmark's ground truth), AP divided by their number "
           f"(DCASE 2025). Δ: {NOTE}\n")
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(md, encoding="utf-8"))
    final = summary["pooled"] or summary["per_seed"][-1]["rows"]
    title = f"soundsift demo (seeds {', '.join(map(str, seeds))}, preset {preset})"
    write_table(demo_table(final, title), out / "results", ("csv", "tex"))
