"""The whole method end to end on the generated benchmark: the layout of the paper's Table 1.

synth (small) -> the recipe ``recipes/demo.yaml`` (stage 1 for three audio encoders -> teacher
embeddings -> stage 2 with the ensemble of all three (M=3) and with self-distillation (M=1) for each
encoder) through the same runner as ``soundsift reproduce`` -> test results table. Finished steps are
skipped when the demo runs again with the same settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from soundsift.names import DCASE_COLUMNS, TRAIN_SPLIT
from soundsift.training.compare import gain_percent
from soundsift.training.tables import Column, Table, to_markdown

ENCODERS = ("cnn", "patchformer", "crnn")
VARIANTS = ("stage1", "stage2-ensemble", "stage2-self")
COLUMNS = DCASE_COLUMNS


def demo_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """One row per (encoder, variant), metrics in percent; with ``vs_stage1`` in the rows, the
    stage-2 rows' paired mAP@10 gain over their stage-1 row with its 95% interval."""
    from soundsift.training.results import GAIN_COLUMN

    gain = any(row.get("vs_stage1") for row in rows)
    columns = [Column("encoder", "text"), Column("variant", "text"), *(Column(c) for c in COLUMNS)]
    table = Table(columns + ([Column(GAIN_COLUMN, "interval")] if gain else []), title=title)
    for i, row in enumerate(rows):
        if i and row["encoder"] != rows[i - 1]["encoder"]:
            table.breaks.add(i)
        g = row.get("vs_stage1")
        extra = [(g["mAP@10"], *g["bootstrap_ci95"]) if g else None] if gain else []
        table.add(row["encoder"], row["variant"], *(row[c] for c in COLUMNS), *extra)
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


def run_demo(
    out: str | Path,
    seed: int = 0,
    preset: str = "small",
    overrides: tuple[str, ...] = (),
    progress: bool = True,
    control: bool = False,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns the results dict also written to results.json.

    ``control`` adds a "stage2-sup" row per encoder: stage 2's schedule with L_sup alone and no
    teachers (the paper's Table 2, row 2), which separates the effect of the estimated
    correspondences from that of simply training longer.
    """
    from soundsift.atomic import atomic_write
    from soundsift.data.synth.benchmark import generate
    from soundsift.training.recipe import Runner, load_recipe
    from soundsift.training.results import GAIN_COLUMN, GAIN_NOTE
    from soundsift.training.tables import write_table

    started = time.time()
    out = Path(out)
    data_root = out / "data"
    generate(data_root, preset=preset, seed=seed, progress=progress)
    runner = Runner(load_recipe("demo"), out, data_root, include={"control"} if control else (),
                    progress=progress, overrides=[f"seed={seed}", *overrides])
    results = runner.run()
    by_row = {(s.row["encoder"], s.row["variant"]): s.id for s in runner.steps.values() if s.row}
    rows = []
    for enc in ENCODERS:
        for variant in (*VARIANTS, "stage2-sup") if control else VARIANTS:
            sid = by_row[enc, variant]
            test = results[sid]["metrics"]["test"]
            rows.append({
                "encoder": enc,
                "variant": variant,
                **{c: round(100 * test[c], 2) for c in COLUMNS},
                "checkpoint": str(runner.model_path(sid)),
            })
            if variant != "stage1":
                rows[-1]["vs_stage1"] = gain_percent(out / by_row[enc, "stage1"], out / sid)
    auc = teacher_auc(data_root, {enc: runner.teacher_path(f"teachers-{enc}") for enc in ENCODERS})
    summary = {
        "rows": rows, "seconds": round(time.time() - started, 1), "seed": seed, "preset": preset,
        "correspondence_auc": auc,
    }
    text = json.dumps(summary, indent=2)
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    table = format_table(rows)
    md = f"# soundsift demo (seed {seed}, preset {preset}, {summary['seconds']} s)\n\n{table}\n"
    if any(row.get("vs_stage1") for row in rows):
        md += f"\n{GAIN_COLUMN}: {GAIN_NOTE}\n"
    write_table(demo_table(rows, f"soundsift demo (seed {seed}, preset {preset})"), out / "results", ("csv", "tex"))
    if auc:
        md += (
            "\nEstimated correspondences on the training split against the benchmark's ground truth "
            "(ROC AUC): " + ", ".join(f"{k} {v:.3f}" for k, v in auc.items()) + "\n"
        )
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(md, encoding="utf-8"))
    return summary
