"""Reports and comparisons: the paired bootstrap against a naive loop, tables in three formats, what a
run saves (history.json, test_queries.json), ``soundsift report`` on a saved recipe folder and
``soundsift compare`` on identical runs, a known shift and different queries."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from soundsift.cli.main import main
from soundsift.metrics import jackknife_ci, paired_bootstrap_ci
from soundsift.training.compare import FILE, compare, read_per_query
from soundsift.training.demo import demo_table, format_table
from soundsift.training.tables import Column, Table, to_csv, to_latex, to_markdown
from test_reproduce import TINY  # noqa: E402  (tiny model, two epochs)

PAPER = {"mAP@10": 28.93, "R@1": 18.11, "R@5": 43.54, "R@10": 57.57}
RECIPE = {
    "name": "tiny-report", "title": "a tiny table", "data_format": "clotho",
    "steps": [
        {"id": "a", "train": "demo/stage1.yaml", "expected": {"paper": PAPER}},
        {"id": "ta", "teachers": {"model": "a", "split": "development"}},
        {"id": "s2", "train": "demo/stage2.yaml", "init_from": "a", "teachers": ["ta"], "set": {"optim.lr": 1.0e-3}},
    ],
}
PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- the statistics
def naive_paired_bootstrap(a, b, n_resamples, alpha, seed):
    """One resample at a time, the quantiles by hand (linear interpolation between order statistics)."""
    rng = np.random.default_rng(seed)
    n = len(a)
    means = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        means.append(float(np.mean([a[i] - b[i] for i in idx])))
    means.sort()

    def quantile(q):
        pos = q * (len(means) - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (pos - lo) * (means[hi] - means[lo])

    return sum(x - y for x, y in zip(a, b)) / n, quantile(alpha / 2), quantile(1 - alpha / 2)


@pytest.mark.parametrize("n, n_resamples, seed", [(7, 200, 0), (1500, 3000, 5)])  # 1500: two blocks
def test_paired_bootstrap_matches_a_naive_loop(n, n_resamples, seed):
    rng = np.random.default_rng(1)
    a, b = rng.random(n), rng.random(n) * 0.8
    got = paired_bootstrap_ci(a, b, n_resamples, 0.05, seed)
    want = naive_paired_bootstrap(a.tolist(), b.tolist(), n_resamples, 0.05, seed)
    assert got == pytest.approx(want, abs=1e-12)
    assert got[1] < got[0] < got[2]
    assert paired_bootstrap_ci(a, b, n_resamples, 0.05, seed) == got  # a fixed seed: the same interval
    assert paired_bootstrap_ci(a, b, n_resamples, 0.05, seed + 1) != got


def test_cluster_bootstrap_resamples_whole_groups():
    """Against a loop written here: draw groups with replacement, pool their queries, take the mean."""
    rng = np.random.default_rng(3)
    clips = [f"clip{i // 5}" for i in range(60)]  # five captions per clip, like ClothoV2
    shared = np.repeat(rng.normal(0, 0.3, 12), 5)  # captions of one clip move together
    a, b = rng.random(60) * 0.1 + shared, rng.random(60) * 0.1
    got = paired_bootstrap_ci(a, b, 500, 0.05, 7, groups=clips)
    names = sorted(set(clips))
    members = {g: [i for i, c in enumerate(clips) if c == g] for g in names}
    gen = np.random.default_rng(7)
    means = []
    for _ in range(500):
        picked = [i for j in gen.integers(0, len(names), size=len(names)) for i in members[names[j]]]
        means.append(sum(a[i] - b[i] for i in picked) / len(picked))
    want = (float(np.mean(a - b)), *np.quantile(means, [0.025, 0.975]))
    assert got == pytest.approx(want, abs=1e-12)
    flat = paired_bootstrap_ci(a, b, 500, 0.05, 7)
    assert got[2] - got[1] > 1.5 * (flat[2] - flat[1])  # correlated captions: the honest interval is wider
    with pytest.raises(ValueError):
        paired_bootstrap_ci(a, b, groups=clips[:-1])


def test_paired_bootstrap_edge_cases_and_agreement_with_the_jackknife():
    x = np.linspace(0, 1, 50)
    assert paired_bootstrap_ci(x, x) == (0.0, 0.0, 0.0)
    assert paired_bootstrap_ci(x + 0.25, x) == pytest.approx((0.25, 0.25, 0.25))
    rng = np.random.default_rng(2)
    a, b = rng.random(2000), rng.random(2000)
    boot, jack = paired_bootstrap_ci(a, b), jackknife_ci(a - b)
    assert boot[0] == pytest.approx(jack[0])
    assert boot[2] - boot[1] == pytest.approx(jack[2] - jack[1], rel=0.1)  # both about 2 * 1.96 * SE
    for bad in [(x, x[:-1]), (x[:1], x[:1]), (np.array([np.nan, 1.0]), np.array([0.0, 1.0]))]:
        with pytest.raises(ValueError):
            paired_bootstrap_ci(*bad)


# ------------------------------------------------------------------------------------------ tables
def test_a_table_in_three_formats():
    table = Table([Column("run", "text"), Column("M", "integer"), Column("mAP@10"),
                   Column("Δ vs stage 1 [95% CI]", "interval")], title="t_1 & 50%")
    table.add("stage1_cnn", 3, 12.345, None)
    table.add("stage2 & co", None, 14.0, (1.655, -0.5, 3.25))
    table.breaks.add(1)
    md = to_markdown(table).splitlines()
    assert md[1] == "|---|---:|---:|---:|"
    assert md[3] == "| stage2 & co |  | 14.00 | +1.66 [-0.50, +3.25] |"
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0] == ["run", "M", "mAP@10", "Δ vs stage 1 [95% CI]", "Δ vs stage 1 [95% CI] low",
                       "Δ vs stage 1 [95% CI] high"]
    assert rows[2] == ["stage2 & co", "", "14.0", "1.655", "-0.5", "3.25"]
    tex = to_latex(table)
    lines = tex.splitlines()
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    assert tex.count("\\midrule") == 2  # after the header, and before the second section
    assert "\\begin{tabular}{lrrr}" in tex and "stage1\\_cnn & 3 & 12.35" in tex
    assert "stage2 \\& co" in tex and "$\\Delta$ vs stage 1 [95\\% CI]" in tex and "% t\\_1 \\& 50\\%" in tex


def test_the_demo_table_shows_the_gains_of_each_stage2_row():
    metrics = {"mAP@10": 20.0, "mAP@16": 25.0, "R@1": 10.0, "R@5": 30.0, "R@10": 40.0}
    gains = {"stage1": {"mAP@10": [1.5, 0.25, 2.75], "mAP@16": [2.0, 1.0, 3.0]},
             "control": {"mAP@10": [0.5, -0.5, 1.5], "mAP@16": [0.75, -0.25, 1.75]}}
    rows = [{"encoder": "cnn", "variant": "stage1", **metrics, "gains": {}},
            {"encoder": "cnn", "variant": "stage2-ensemble", **metrics, "gains": gains},
            {"encoder": "crnn", "variant": "stage1", **metrics}]
    md = format_table(rows)
    head = md.splitlines()[0]
    assert "| mAP@10 | mAP@16 | R@1 |" in head
    assert head.index("Δ mAP@10 vs stage 1 [95% CI]") < head.index("Δ mAP@16 vs stage 1") < head.index(
        "Δ mAP@10 vs control") < head.index("Δ mAP@16 vs control")
    assert ("| cnn | stage2-ensemble | 20.00 | 25.00 | 10.00 | 30.00 | 40.00 | +1.50 [+0.25, +2.75] | "
            "+2.00 [+1.00, +3.00] | +0.50 [-0.50, +1.50] | +0.75 [-0.25, +1.75] |") in md
    assert md.splitlines()[2].endswith("| 40.00 |  |  |  |  |")  # a stage-1 row has no gain
    assert "Δ" not in format_table([{**r, "gains": {}} for r in rows])
    assert "\\midrule\ncrnn" in to_latex(demo_table(rows))  # the encoders are sections, as in Table 1


# ---------------------------------------------------------------------------- a saved tiny recipe
@pytest.fixture(scope="module")
def recipe_out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report")
    data = base / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(data)]) == 0
    (base / "r.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    out = base / "out"
    assert main(["-q", "reproduce", str(base / "r.yaml"), "--data-root", str(data), "--out", str(out), *TINY]) == 0
    return out


def test_a_run_saves_its_history_and_per_query_results(recipe_out):
    for run, term in (("a", "L_sup"), ("s2", "L_dist")):
        metrics = json.loads((recipe_out / run / "metrics.json").read_text())
        epochs = json.loads((recipe_out / run / "history.json").read_text())["epochs"]
        assert [e["epoch"] for e in epochs] == [0, 1]
        assert all(term in e["train"] and e["train"][term] > 0 and e["steps"] > 0 for e in epochs)
        assert [e["val"]["mAP@10"] for e in epochs] == [h["mAP@10"] for h in metrics["val_history"]]
        queries = read_per_query(recipe_out / run / FILE)
        assert len(queries.ap) == 60 and len(set(queries.clips)) == 12  # 12 test clips, 5 captions each
        assert queries.ap.mean() == pytest.approx(metrics["test"]["mAP@10"])
        assert np.array_equal(queries.ap, np.where(queries.ranks <= 10, 1.0 / queries.ranks, 0.0))


def test_recipe_results_carry_the_gain_over_stage1_in_three_formats(recipe_out):
    rows = {r["step"]: r for r in json.loads((recipe_out / "results.json").read_text())["rows"]}
    gain = rows["s2"]["vs_init"]
    assert "vs_init" not in rows["a"] and gain["step"] == "a"
    assert gain["mAP@10"] == pytest.approx(rows["s2"]["mAP@10"] - rows["a"]["mAP@10"], abs=0.02)
    assert gain["bootstrap_ci95"][0] <= gain["mAP@10"] <= gain["bootstrap_ci95"][1]
    assert "Δ vs stage 1 [95% CI]" in (recipe_out / "results.md").read_text()
    assert "\\bottomrule" in (recipe_out / "results.tex").read_text()
    header = next(csv.reader(io.StringIO((recipe_out / "results.csv").read_text())))
    assert header[:5] == ["step", "mAP@10", "R@1", "R@5", "R@10"] and "paper mAP@10" in header


def check_png_and_svg(stem: Path) -> None:
    png, svg = Path(f"{stem}.png"), Path(f"{stem}.svg")
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000, png
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 50, svg


def test_report_from_a_saved_recipe_folder(recipe_out, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(recipe_out, copy)
    (copy / "a" / "history.json").unlink()  # a run saved before history.json: curves from logs/metrics.csv
    assert main(["report", str(copy)]) == 0
    report = copy / "report"
    assert f"into {report}" in capsys.readouterr().out
    for stem in ("curves", "curves/a", "curves/s2", "correspondences/ta", "calibration"):
        check_png_and_svg(report / stem)
    results = (report / "results.md").read_text()
    assert "paper mAP@10" in results and "| 28.93 |" in results and "Δ vs stage 1 [95% CI]" in results
    for name in ("results", "runs"):
        tex = (report / f"{name}.tex").read_text()
        assert all(rule in tex for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
        assert len(list(csv.reader(io.StringIO((report / f"{name}.csv").read_text())))) == 3  # header + a, s2
    runs = (report / "runs.md").read_text()
    assert "| s2 | a | 1 |" in runs  # started from a, one teacher
    found = json.loads((report / "correspondences.json").read_text())
    (est,) = found["estimators"]
    assert est["label"] == "ta" and 0 <= est["auc"] <= 1 and 0 < est["p_hat_mass_on_relevant"] < 1
    assert est["query"]["n_truly_described"] >= 2  # the figure's caption describes several clips
    assert sum(b["n"] for b in est["calibration"]) == 40 * 200  # every (clip, caption) pair of the split
    index = (report / "index.md").read_text()
    assert "](curves/a.png)" in index and "](correspondences/ta.png)" in index
    assert main(["report", str(copy / "s2"), "--query", "3"]) == 0  # a single run folder
    assert (copy / "s2" / "report" / "curves" / "s2.png").is_file()
    assert json.loads((copy / "s2" / "report" / "correspondences.json").read_text())["estimators"][0]["query"][
        "index"] == 3


def test_report_from_another_directory_of_files_with_relative_paths(recipe_out, tmp_path, monkeypatch, capsys):
    """Older versions stored data roots as typed, relative to where training ran (unknown now): the
    report looks for them from the folders above the teacher file and the runs, and names the path it
    looked for when the ground truth is nowhere."""
    from soundsift.correspondences import TeacherEmbeddings

    work = tmp_path / "work"
    shutil.copytree(recipe_out, work / "runs/x")
    shutil.copytree(recipe_out.parent / "synth", work / "synth")
    teacher = TeacherEmbeddings.load(work / "runs/x/teachers/ta.safetensors")
    teacher.meta["data_root"] = "synth"  # as `cd work && soundsift teachers --data-root synth` wrote it
    teacher.save(work / "runs/x/teachers/ta.safetensors")
    for run in ("a", "s2"):
        config = yaml.safe_load((work / "runs/x" / run / "config.yaml").read_text())
        config["data"]["root"] = "synth"
        (work / "runs/x" / run / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "work/runs/x"]) == 0
    check_png_and_svg(work / "runs/x/report/correspondences/ta")
    assert "Not drawn" not in (work / "runs/x/report/index.md").read_text()

    shutil.rmtree(work / "synth")
    assert main(["report", "work/runs/x", "--out", str(tmp_path / "r2")]) == 0
    assert "ta: no synth ground truth for split development: synth/synth_ground_truth_development.npz not found" \
        in capsys.readouterr().err


def test_teacher_files_and_run_configs_store_canonical_paths(recipe_out, tmp_path, monkeypatch):
    from soundsift.config import load_config
    from soundsift.correspondences import TeacherEmbeddings
    from soundsift.training.run import prepare
    from soundsift.training.teachers import make_teacher

    monkeypatch.chdir(recipe_out.parent)
    meta = TeacherEmbeddings.load(make_teacher("out/a/model.pt", "./synth/", tmp_path / "t.safetensors",
                                               progress=False)).meta
    assert meta["data_root"] == str((recipe_out.parent / "synth").resolve())
    assert meta["model_path"] == str((recipe_out / "a" / "model.pt").resolve())
    out_dir = os.path.relpath(tmp_path / "run")
    prepare(load_config("demo/stage2.yaml", [*TINY, "data.root=synth/", f"out_dir={out_dir}", "init_from=out/a/model.pt",
                                             "teachers=[out/teachers/ta.safetensors]"]), progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["out_dir"] == str((tmp_path / "run").resolve())
    assert saved["data"]["root"] == meta["data_root"] and saved["init_from"] == meta["model_path"]
    assert saved["teachers"] == [str((recipe_out / "teachers" / "ta.safetensors").resolve())]


def test_report_without_matplotlib_is_one_line(recipe_out, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(recipe_out / "a"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "soundsift[plots]" in err[0]


# ------------------------------------------------------------------------------------------ compare
def compare_json(capsys, *argv: str) -> dict:
    assert main(["compare", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_identical_runs_a_known_shift_and_other_queries(recipe_out, tmp_path, capsys):
    same = compare_json(capsys, str(recipe_out / "a"), str(recipe_out / "a"))
    assert same["difference"] == 0 and same["bootstrap_ci"][0] <= 0 <= same["bootstrap_ci"][1]
    assert same["jackknife_ci"][0] <= 0 <= same["jackknife_ci"][1] and same["n_queries"] == 60

    doc = json.loads((recipe_out / "a" / FILE).read_text())
    ap = np.array([q["AP@10"] for q in doc["queries"]])
    shifted = {**doc, "queries": [{**q, "rank": 1, "AP@10": 1.0} for q in doc["queries"]][::-1]}  # other order
    (tmp_path / "best.json").write_text(json.dumps(shifted))
    shift = compare_json(capsys, str(recipe_out / "a" / FILE), str(tmp_path / "best.json"))
    assert shift["difference"] == pytest.approx(1 - ap.mean())
    assert shift["bootstrap_ci"][0] <= shift["difference"] <= shift["bootstrap_ci"][1]
    assert shift["queries_worse"] == 0 and shift["queries_better"] == int((ap < 1).sum())
    constant = {**doc, "queries": [{**q, "AP@10": q["AP@10"] + 0.1} for q in doc["queries"]]}
    (tmp_path / "plus.json").write_text(json.dumps(constant))
    plus = compare_json(capsys, str(recipe_out / "a"), str(tmp_path / "plus.json"))
    assert plus["difference"] == pytest.approx(0.1) and plus["bootstrap_ci"] == pytest.approx([0.1, 0.1])

    stage2 = compare(read_per_query(recipe_out / "a" / FILE), read_per_query(recipe_out / "s2" / FILE))
    gain = json.loads((recipe_out / "results.json").read_text())["rows"][-1]["vs_init"]
    assert gain["mAP@10"] == pytest.approx(100 * stage2["difference"], abs=0.006)  # what the table shows

    other = {**doc, "queries": doc["queries"][:-1] + [{**doc["queries"][-1], "caption": "a caption never tested"}]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["compare", str(recipe_out / "a"), str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different queries (1 only in the first, 1 only in the second" in err[0]


def test_compare_evaluates_model_files(recipe_out, capsys):
    data = yaml.safe_load((recipe_out / "a" / "config.yaml").read_text())["data"]["root"]
    found = compare_json(capsys, str(recipe_out / "a"), str(recipe_out / "a" / "model.pt"), "--data-root", data)
    assert found["difference"] == pytest.approx(0, abs=1e-12) and found["n_queries"] == 60
    assert main(["compare", str(recipe_out / "a"), str(recipe_out / "a" / "model.pt")]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_resume_keeps_the_history(recipe_out, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(recipe_out / "a", run)
    before = json.loads((run / "history.json").read_text())["epochs"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert main(["-q", "train", "--resume", "--config", str(run / "config.yaml"), f"out_dir={run}", "optim.epochs=3",
                 f"data.root={config['data']['root']}"]) == 0
    after = json.loads((run / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in after] == [0, 1, 2] and after[:2] == before
    assert after[2]["train"]["L_sup"] > 0
