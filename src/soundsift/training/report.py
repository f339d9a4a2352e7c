"""``soundsift report``: figures and tables regenerated from saved runs, written into ``report/``.

From a recipe or demo folder (``results.json`` and its run folders) or from single train run folders:

- ``results.{md,csv,tex}``: the results table of ``results.json`` (the paper's numbers beside ours where
  the recipe names them, the paired gain of each stage-2 row over its stage-1 row);
- ``runs.{md,csv,tex}``: every run found, with validation and test metrics and the gain over its
  ``init_from`` run;
- ``curves/RUN.{png,svg}``: loss terms and validation mAP@10 per epoch (``history.json``; older runs:
  Lightning's ``logs/metrics.csv``), and ``curves.{png,svg}`` with every run's validation mAP@10;
- ``correspondences/ESTIMATOR.{png,svg}``: the paper's figure for one query caption: its top-50
  estimated correspondences (the teachers' C_hat column, sorted) against the ground truth of the
  generated benchmark, and the stage-2 target they make;
- ``calibration.{png,svg}``: binned C_hat against the fraction of truly relevant (caption, clip) pairs;
- ``correspondences.json`` (the numbers behind both) and ``index.md`` (everything on one page).

The drawing is in ``training.figures`` (matplotlib's Agg canvas, no display needed; the ``plots`` extra).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.errors import ConfigError, require
from soundsift.names import DCASE_COLUMNS, TRAIN_SPLIT
from soundsift.training.figures import (
    PLOTS,
    calibration_bins,
    calibration_figure,
    correspondence_figure,
    curves_figure,
    overview_figure,
    save_figure,
)
from soundsift.training.paths import locate
from soundsift.training.tables import Column, Table, to_markdown, write_table

MAX_PAIRS = 50_000_000  # (clip, caption) pairs above which the correspondence figures are skipped


@dataclass
class Run:
    name: str
    dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)  # history.json's, or rebuilt
    losses_from: str = "history.json"


# ---------------------------------------------------------------------------------------- reading
def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def find_runs(root: Path) -> list[Run]:
    """Every train run folder (config.yaml + metrics.json) at or below ``root``, by name."""
    import yaml

    dirs = [root] if (root / "metrics.json").is_file() else sorted(
        p.parent for p in root.rglob("metrics.json") if "report" not in p.relative_to(root).parts)
    runs = []
    for d in dirs:
        if not (d / "config.yaml").is_file():
            continue
        name = d.name if d == root else d.relative_to(root).as_posix()
        config = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8")) or {}
        run = Run(name, d, config, _json(d / "metrics.json"))
        run.epochs, run.losses_from = read_epochs(run)
        runs.append(run)
    return runs


def read_epochs(run: Run) -> tuple[list[dict[str, Any]], str]:
    """Per epoch: ``{"epoch", "train": {loss terms}, "val": {metrics}}`` from history.json; for runs
    saved before it, validation from metrics.json and losses averaged from logs/metrics.csv."""
    if (run.dir / "history.json").is_file():
        return list(_json(run.dir / "history.json").get("epochs", [])), "history.json"
    val = {h["epoch"]: {k: v for k, v in h.items() if k != "epoch"} for h in run.metrics.get("val_history") or []}
    train: dict[int, dict[str, list[float]]] = {}
    log = run.dir / "logs" / "metrics.csv"
    if log.is_file():
        with open(log, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if key and key.startswith("train/") and value not in ("", None) and row.get("epoch"):
                        train.setdefault(int(row["epoch"]), {}).setdefault(key[6:], []).append(float(value))
    epochs = sorted(set(val) | set(train))
    rebuilt = [{"epoch": e, "train": {k: float(np.mean(v)) for k, v in train.get(e, {}).items()},
                "val": val.get(e, {})} for e in epochs]
    return rebuilt, "logs/metrics.csv (mean of the logged steps)" if train else "none saved"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "run"


# ---------------------------------------------------------------------------- correspondences
def _resolve_teacher(path: str, roots: list[Path], run: Run | None) -> Path | None:
    """A teacher file named in a config: by name in the ``teachers/`` folder of the reported folders
    (or of the run's recipe folder), else as written (the folders may have moved since)."""
    name = Path(path).name
    candidates = [r / "teachers" / name for r in roots]
    if run is not None:
        candidates += [run.dir.parent / "teachers" / name, run.dir.parent.parent / "teachers" / name]
    return next((c for c in [*candidates, Path(path)] if c.exists()), None)


def find_estimators(runs: list[Run], roots: list[Path]) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """(label, teacher files) of every single teacher and every ensemble the runs trained against."""
    singles: dict[Path, None] = {}
    for root in roots:
        for p in sorted((root / "teachers").glob("*")) if (root / "teachers").is_dir() else ():
            if p.suffix == ".safetensors" or p.is_dir():
                singles[p.resolve()] = None
    sets: dict[tuple[Path, ...], None] = {}
    notes = []
    for run in runs:
        named = list(run.config.get("teachers") or [])
        found = [_resolve_teacher(str(t), roots, run) for t in named]
        if None in found:
            notes.append(f"{run.name}: teacher file {named[found.index(None)]} not found")
            continue
        found = [f.resolve() for f in found]
        singles.update(dict.fromkeys(found))
        if len(found) > 1:
            sets[tuple(found)] = None
    out = [(p.name.removesuffix(".safetensors"), [p]) for p in singles]
    for i, s in enumerate(sets):
        out.append((f"ensemble M={len(s)}" + (f" #{i + 1}" if len(sets) > 1 else ""), list(s)))
    return out, notes


def _truth_for(teacher, roots: list[tuple[str, Path]], cache: dict) -> tuple[np.ndarray | None, str]:
    """The generated benchmark's ``holds`` laid out like the teacher's C_hat, (n_clips, n_captions).

    Its data root is the teacher file's, else one of ``roots`` (a run's, with the run's folder); a
    relative one, stored by older versions, is looked for from here and from above that file or folder.
    """
    from soundsift.data.synth.benchmark import load_ground_truth

    split = str(teacher.meta.get("split", TRAIN_SPLIT))
    name = f"synth_ground_truth_{split}.npz"
    stored = [(teacher.meta.get("data_root"), Path(teacher.source or ".").parent), *roots]
    looked = list(dict.fromkeys(str(Path(r) / name) for r, _ in stored if r))
    for stored_root, anchor in stored:
        found = locate(Path(stored_root) / name, [anchor]) if stored_root else None
        if found is None:
            continue
        root = found.parent
        key = (str(Path(root).resolve()), split)
        if key not in cache:
            cache[key] = load_ground_truth(root, split)
        gt = cache[key]
        files = [str(f) for f in gt["file_names"]]
        per = len(gt["captions"]) // max(1, len(files))
        where = {(files[i // per], str(c)): i for i, c in reversed(list(enumerate(gt["captions"])))}
        clip_of = {f: i for i, f in enumerate(files)}
        clips = [clip_of.get(str(c)) for c in teacher.clip_ids]
        captions = [where.get((str(teacher.clip_ids[int(k)]), str(t)))
                    for k, t in zip(teacher.caption_clip.tolist(), teacher.caption_texts)]
        if None in clips or None in captions:
            return None, f"{root}: its ground truth does not cover the teacher's clips and captions"
        return gt["holds"][np.ix_(captions, clips)].T.copy(), f"{root} ({split})"
    where = f"{', '.join(looked)} not found" if looked else "the teacher file and the runs record no data root"
    if any(not Path(p).is_absolute() for p in looked):
        where += " (a relative path: looked for from here and from the folders above the teacher file and the runs)"
    return None, f"no synth ground truth for split {split}: {where}; only the generated benchmark has one"


def choose_query(holds: np.ndarray) -> int:
    """A caption that truly describes several clips, but few enough to see them among its top 50: the
    most such up to 10 clips (and 10% of the split, at least 3); failing that, the one describing most."""
    n_rel = holds.sum(axis=0)
    limit = max(3, min(10, int(0.1 * holds.shape[0])))
    ok = (n_rel >= 2) & (n_rel <= limit)
    return int(np.argmax(np.where(ok, n_rel, -1))) if ok.any() else int(np.argmax(n_rel))


def analyse_estimators(estimators: list[tuple[str, list[Path]]], roots: list[tuple[str, Path]], tau: float,
                       query: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    """C_hat of each estimator against the ground truth: AUC, calibration bins, p_hat mass on truly
    relevant clips; the arrays the figures need ride along under ``_`` keys."""
    import torch

    from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble, correspondence_auc

    out, notes, cache = [], [], {}
    for label, paths in estimators:
        teachers = [TeacherEmbeddings.load(p) for p in paths]
        pairs = len(teachers[0].clip_ids) * len(teachers[0].caption_texts)
        if pairs > MAX_PAIRS:
            notes.append(f"{label}: {pairs} (clip, caption) pairs, more than the report draws ({MAX_PAIRS})")
            continue
        holds, where = _truth_for(teachers[0], roots, cache)
        if holds is None:
            notes.append(f"{label}: {where}")
            continue
        c_hat = TeacherEnsemble(teachers).full_similarity().double().numpy()
        logits = (c_hat - c_hat.max(axis=0, keepdims=True)) / tau
        p_hat = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
        scores, truth = c_hat.ravel(), holds.ravel().astype(bool)
        out.append({
            "label": label, "M": len(paths), "teachers": [str(p) for p in paths], "ground_truth": where,
            "auc": correspondence_auc(torch.from_numpy(c_hat), torch.from_numpy(holds)),
            "p_hat_mass_on_relevant": float((p_hat * holds).sum(axis=0).mean()),
            "base_rate": float(truth.mean()), "calibration": calibration_bins(scores, truth),
            "_scores": scores, "_truth": truth, "_c_hat": c_hat, "_holds": holds.astype(bool),
            "_caption_clip": teachers[0].caption_clip.numpy(), "_captions": teachers[0].caption_texts,
        })
    if out:
        q = choose_query(out[0]["_holds"]) if query is None else int(query)
        for est in out:
            if not 0 <= q < est["_c_hat"].shape[1]:
                raise ConfigError(f"--query {q}: the split has captions 0 to {est['_c_hat'].shape[1] - 1}")
            est["query"] = {"index": q, "caption": str(est["_captions"][q]),
                            "n_truly_described": int(est["_holds"][:, q].sum())}
    return out, notes


# ------------------------------------------------------------------------------------- tables
def runs_table(runs: list[Run]) -> Table:
    """One row per run: validation and test metrics (percent), the gain over its init_from run."""
    from soundsift.training.compare import gain_percent

    table = Table([Column("run", "text"), Column("init_from", "text"), Column("M", "integer"),
                   Column("best epoch", "integer"),
                   Column("val mAP@10"), Column("mAP@10"), Column("R@1"), Column("R@5"), Column("R@10"),
                   Column("Δ mAP@10 vs init_from [95% CI]", "interval")], title="runs (test split, percent)")
    for run in runs:
        init = init_run(run, runs)
        gain = gain_percent(init.dir, run.dir) if init is not None else None
        test, val = run.metrics.get("test") or {}, run.metrics.get("val") or {}
        pct = [None if test.get(c) is None else round(100 * test[c], 2) for c in DCASE_COLUMNS]
        best = run.metrics.get("best_epoch")
        table.add(run.name, init.name if init else Path(str(run.config.get("init_from") or "")).name,
                  len(run.config.get("teachers") or []) or None, None if best is None else best + 1,
                  None if val.get("mAP@10") is None else round(100 * val["mAP@10"], 2), *pct,
                  (gain["mAP@10"], *gain["bootstrap_ci95"]) if gain else None)
    return table


def init_run(run: Run, runs: list[Run]) -> Run | None:
    """The run whose model ``run`` started from (``init_from``): by path, else by its folder's name
    (the config may hold a path relative to where training ran)."""
    init = str(run.config.get("init_from") or "")
    if not init:
        return None
    path = Path(init)
    same = [r for r in runs if r is not run and (r.dir / "model.pt").resolve() == path.resolve()]
    named = [r for r in runs if r is not run and r.dir.name == path.parent.name and path.name == "model.pt"]
    return (same or (named if len(named) == 1 else [None]))[0]


def results_tables(root: Path) -> Table | None:
    """The table of a recipe's or the demo's ``results.json``."""
    from soundsift.training.demo import demo_table
    from soundsift.training.results import results_table

    doc = _json(root / "results.json")
    rows = doc.get("rows") or []
    if rows and "step" in rows[0]:
        return results_table(rows, str(doc.get("recipe", root.name)))
    if rows and "encoder" in rows[0]:
        return demo_table(rows, f"soundsift demo (seed {doc.get('seed')}, preset {doc.get('preset')})")
    return None


# ------------------------------------------------------------------------------------- report
def report(run_dirs: list[str | Path], out: str | Path, query: int | None = None,
           log=None) -> dict[str, Any]:
    """Regenerate every figure and table of the runs under ``run_dirs`` into ``out``; returns what
    was written (paths, relative to ``out``) and what was skipped, and why."""
    require(*PLOTS)  # before any output
    roots = [Path(d) for d in run_dirs]
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"{root}: not a folder (give a run folder or a recipe's output folder)")
    out = Path(out)
    runs = [r for root in roots for r in find_runs(root)]
    if not runs and not any((root / "results.json").is_file() for root in roots):
        raise ConfigError(f"{', '.join(map(str, roots))}: no runs (config.yaml + metrics.json) or results.json found")
    if len(roots) > 1:  # names stay unique across folders
        for run in runs:
            run.name = f"{run.dir.parent.name}/{run.name}" if run.name == run.dir.name else run.name
    written: list[Path] = []
    notes: list[str] = []
    sections = [f"# soundsift report: {', '.join(str(r) for r in roots)}", ""]

    for root in roots:
        if (root / "results.json").is_file() and (table := results_tables(root)) is not None:
            stem = "results" if len(roots) == 1 else f"results-{slug(root.name)}"
            written += write_table(table, out / stem, markdown_head=f"# {table.title}\n\nTest split, percent.\n\n")
            sections += [f"## {table.title}", "", to_markdown(table), ""]
    if runs:
        table = runs_table(runs)
        written += write_table(table, out / "runs", markdown_head=f"# {table.title}\n\n")
        sections += ["## Runs (test split, percent)", "", to_markdown(table), "", "## Training curves", ""]
        written += save_figure(overview_figure({r.name: r.epochs for r in runs}), out / "curves")
        sections += ["![validation mAP@10 of every run](curves.png)", ""]
        for run in runs:
            stem = out / "curves" / slug(run.name)
            written += save_figure(curves_figure(run.name, run.epochs, run.metrics, run.losses_from), stem)
            sections.append(f"![{run.name}](curves/{stem.name}.png)")
        sections.append("")

    estimators, missing = find_estimators(runs, roots)
    notes += missing
    tau = float(next((r.config.get("loss", {}).get("tau") for r in runs if r.config.get("loss")), 0.05))
    data_roots = [(str(r.config["data"]["root"]), r.dir) for r in runs if (r.config.get("data") or {}).get("root")]
    estimates, skipped = analyse_estimators(estimators, data_roots, tau, query)
    notes += skipped
    if estimates:
        sections += ["## Estimated correspondences against the ground truth", ""]
        for est in estimates:
            q = est["query"]["index"]
            holds = est["_holds"][:, q]
            fig = correspondence_figure(est["_c_hat"][:, q], holds, int(est["_caption_clip"][q]),
                                        est["query"]["caption"], est["label"], tau)
            stem = out / "correspondences" / slug(est["label"])
            written += save_figure(fig, stem)
            sections.append(f"![{est['label']}](correspondences/{stem.name}.png)")
        written += save_figure(calibration_figure(estimates), out / "calibration")
        sections += ["", "![calibration](calibration.png)", "", "| estimator | M | ROC AUC | p_hat mass on truly "
                     "relevant clips (column softmax over the whole split, mean over captions) |", "|---|---:|---:|---:|"]
        sections += [f"| {e['label']} | {e['M']} | {e['auc']:.3f} | {100 * e['p_hat_mass_on_relevant']:.1f}% |"
                     for e in estimates]
        public = [{k: v for k, v in e.items() if not k.startswith("_")} for e in estimates]
        text = json.dumps({"tau": tau, "estimators": public}, indent=2, ensure_ascii=False)
        written.append(atomic_write(out / "correspondences.json", lambda tmp: tmp.write_text(text, encoding="utf-8")))
    if notes:
        sections += ["", "## Not drawn", "", *(f"- {n}" for n in notes)]
    index = "\n".join(sections).rstrip("\n") + "\n"
    written.append(atomic_write(out / "index.md", lambda tmp: tmp.write_text(index, encoding="utf-8")))
    if log is not None:
        for note in notes:
            log(f"report: not drawn: {note}")
    return {"out": str(out), "files": sorted(str(p.relative_to(out)) for p in written), "notes": notes,
            "runs": [r.name for r in runs]}
