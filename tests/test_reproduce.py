"""``soundsift reproduce`` on a tiny recipe: order, skipping, resuming, re-running what changed, --print."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from soundsift.cli.main import main
from soundsift.errors import ConfigError
from soundsift.training.recipe import Runner, _digest, _stable, load_recipe

pytestmark = pytest.mark.slow

TINY = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=16",
        "optim.epochs=2", "optim.batch_size=16", "trainer.progress_bar=false"]
PAPER = {"mAP@10": 10.0, "R@1": 5.0, "R@5": 20.0, "R@10": 30.0}
RECIPE = {
    "name": "tiny", "title": "a tiny table", "data_format": "clotho",
    "steps": [
        {"id": "a", "train": "demo/stage1.yaml", "expected": {"paper": PAPER}},
        {"id": "b", "train": "demo/stage1.yaml", "set": {"seed": 1}},
        {"id": "ta", "teachers": {"model": "a", "split": "development"}},
        {"id": "tb", "teachers": {"model": "b", "split": "development"}},
        {"id": "s2", "train": "demo/stage2.yaml", "init_from": "a", "teachers": ["ta", "tb"], "set": {"optim.lr": 1.0e-3},
         "expected": {"paper": PAPER}},
        {"id": "ev", "evaluate": {"model": "s2", "split": "evaluation"}, "expected": {"paper": PAPER}},
        {"id": "sw", "sweep": {"train": "demo/stage2.yaml", "init_from": "b",
                               "grid": {"optim.lr": [1.0e-3, 1.0e-4], "teachers": [["tb"]]}},
         "expected": {"paper": PAPER}},
    ],
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reproduce") / "synth"
    assert main(["-q", "synth", "--preset", "tiny", "--out", str(root)]) == 0
    return root


def write_recipe(path: Path, recipe: dict = RECIPE) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_cli(recipe: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soundsift.cli.main", "-q", "reproduce", str(recipe), "--data-root",
                           str(data), "--out", str(out), *TINY, *extra], capture_output=True, text=True, env=ENV)


def mtimes(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in out.glob("*/model.pt")} | \
           {p.name: p.stat().st_mtime for p in (out / "teachers").glob("*.safetensors")}


def test_recipe_is_checked_and_ordered(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml"))
    order = list(recipe.steps)
    assert order.index("a") < order.index("ta") < order.index("s2") < order.index("ev")
    assert recipe.steps["s2"].needs == ["a", "ta", "tb"]
    bad = dict(RECIPE, steps=[*RECIPE["steps"], {"id": "x", "train": "demo/stage2.yaml", "init_from": "nope"}])
    with pytest.raises(ConfigError, match="'x' uses 'nope'"):
        load_recipe(write_recipe(tmp_path / "bad.yaml", bad))
    loop = dict(RECIPE, steps=[{"id": "p", "teachers": {"model": "q"}}, {"id": "q", "train": "demo/stage1.yaml",
                                                                             "init_from": "p"}])
    with pytest.raises(ConfigError, match="circle"):
        load_recipe(write_recipe(tmp_path / "loop.yaml", loop))


def test_paper_recipes_print_their_steps_in_order(capsys):
    assert main(["reproduce", "table1", "--print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and all(line.startswith("soundsift ") for line in lines)
    assert [line.split()[1] for line in lines] == ["train"] * 3 + ["teachers"] * 3 + ["train"] * 6
    assert "table1-passt-stage1.yaml" in lines[0] and "runs/table1/passt-stage1" in lines[0]
    assert "init_from=runs/table1/passt-stage1/model.pt" in lines[6] and lines[6].count(".safetensors") == 3
    assert main(["reproduce", "table2", "--print"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 7 + 18  # a train per sweep point


def test_run_skip_and_rerun_what_changed(data, tmp_path, capsys):
    recipe, out = write_recipe(tmp_path / "r.yaml"), tmp_path / "out"
    assert main(["-q", "reproduce", str(recipe), "--data-root", str(data), "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["step"]: r for r in results["rows"]}
    assert set(rows) == {"a", "b", "s2", "ev", "sw"}  # every step with test metrics
    assert rows["a"]["paper_diff"]["mAP@10"] == pytest.approx(rows["a"]["mAP@10"] - 10.0, abs=0.011)
    assert rows["ev"]["mAP@10"] == pytest.approx(rows["s2"]["mAP@10"], abs=0.01)  # evaluate = the test split
    assert len(results["sweeps"]["sw"]) == 2 and "## sw: grid" in (out / "results.md").read_text()
    before = mtimes(out)
    capsys.readouterr()

    assert main(["-q", "reproduce", str(recipe), "--data-root", str(data), "--out", str(out), *TINY]) == 0
    assert capsys.readouterr().err.count("done, skipped") == 8  # 7 steps, the sweep's 2 points, not the sweep
    assert mtimes(out) == before

    changed = dict(RECIPE, steps=[dict(s, set={"optim.lr": 5.0e-4}) if s["id"] == "s2" else s for s in RECIPE["steps"]])
    write_recipe(recipe, changed)
    assert main(["-q", "reproduce", str(recipe), "--data-root", str(data), "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "s2: running" in err and "ev: running" in err and "a: done, skipped" in err and "sw/p000: done" in err
    after = mtimes(out)
    assert after["s2"] != before["s2"] and all(after[k] == before[k] for k in before if k != "s2")


def test_killed_run_resumes_to_the_same_table(data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml")
    whole = run_cli(recipe, data, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "soundsift.cli.main", "-q", "reproduce", str(recipe), "--data-root", str(data),
           "--out", str(out), *TINY]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / ".reproduce" / "ta.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the middle of the next step (tb or s2)
    proc.wait()
    assert not (out / "results.json").exists()
    again = run_cli(recipe, data, out)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "results.json").read_text()) == json.loads((tmp_path / "whole" / "results.json").read_text())


def test_printed_commands_run_as_a_script_and_give_the_same_results(data, tmp_path):
    recipe, out = write_recipe(tmp_path / "r.yaml"), tmp_path / "printed"
    runner = Runner(load_recipe(recipe), out, data, overrides=TINY)
    script = tmp_path / "steps.sh"
    soundsift = f"{sys.executable} -m soundsift.cli.main"
    lines = [line.replace("soundsift ", f"{soundsift} -q ", 1).replace("-q -q", "-q") for line in runner.commands()]
    script.write_text("set -e\n" + "\n".join(lines) + "\n")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr
    collect = run_cli(recipe, data, out)
    assert collect.returncode == 0 and collect.stderr.count("adopted") == 8, collect.stderr
    whole = tmp_path / "whole2"
    assert run_cli(recipe, data, whole).returncode == 0
    assert json.loads((out / "results.json").read_text()) == json.loads((whole / "results.json").read_text())


def test_slurm_launcher_runs_each_step_as_a_job(data, tmp_path):
    """One submitit job per step (here submitit's local executor), dependencies respected, same results."""
    pytest.importorskip("submitit", reason="the 'slurm' extra is not installed")
    from soundsift.training.launch import launch_slurm

    small = dict(RECIPE, steps=[s for s in RECIPE["steps"] if s["id"] in ("a", "ta", "tb", "b", "s2")])
    recipe = write_recipe(tmp_path / "r.yaml", small)
    direct = run_cli(recipe, data, tmp_path / "direct")
    assert direct.returncode == 0, direct.stderr
    runner = Runner(load_recipe(recipe), tmp_path / "jobs", data, overrides=TINY, progress=False, log=lambda m: None)
    final = launch_slurm(runner, tmp_path / "submitit", local=True)
    summary = final.result()
    assert [r["step"] for r in summary["rows"]] == ["a", "b", "s2"]
    assert json.loads((tmp_path / "jobs" / "results.json").read_text()) == \
        json.loads((tmp_path / "direct" / "results.json").read_text())
    assert sorted(p.name for p in (tmp_path / "jobs" / ".reproduce").glob("*.json")) == \
        ["a.json", "b.json", "s2.json", "ta.json", "tb.json"]


# ------------------------------------------------------------------ the spelling of paths (fast: no training)
def fake_steps(monkeypatch) -> None:
    """Steps that finish at once: what the runner records and skips is all these tests look at."""
    monkeypatch.setattr(Runner, "execute", lambda self, step, sid, config, fresh: {"metrics": {}})


def spellings(base: Path) -> list[tuple[str, str]]:
    """(--data-root, --out) of one folder, spelled four ways."""
    return [("runs/x/data", "runs/x"), ("runs/x/data/", "runs/x/"), ("./runs/x/data", "./runs/x"),
            (str(base / "runs/x/data"), str(base / "runs/x"))]


def dry_run(recipe: Path, data: str, out: str, capsys) -> list[str]:
    assert main(["reproduce", str(recipe), "--data-root", data, "--out", out, "--dry-run", *TINY]) == 0
    return capsys.readouterr().out.splitlines()


def test_finished_steps_are_done_however_the_paths_are_spelled(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/x/data").mkdir(parents=True)
    recipe = write_recipe(tmp_path / "r.yaml")
    fake_steps(monkeypatch)
    for data, out in spellings(tmp_path):
        assert dry_run(recipe, data, out, capsys)[0] == "a: train: to run"
    Runner(load_recipe(recipe), "runs/x", "runs/x/data", overrides=TINY, log=lambda m: None).run()
    for data, out in spellings(tmp_path):
        lines = dry_run(recipe, data, out, capsys)
        assert len(lines) == 7 and all(line.endswith(": done") for line in lines), (data, out, lines)


def write_old_records(runner: Runner) -> None:
    """Records as soundsift wrote them before paths were hashed canonical: over the paths as typed."""
    hashes: dict[str, str] = {}
    for step in runner.selected():
        spec = step.spec
        points = runner.points(step) if step.kind == "sweep" else []
        if step.kind in ("train", "sweep"):
            what = _stable(runner.train_config(step.id, spec)) if step.kind == "train" else \
                [(pid, _stable(runner.train_config(pid, spec, values))) for pid, values in points]
        else:
            what = {"data_root": runner.data_root, "format": "clotho", **step.spec.to_dict()}
        hashes[step.id] = _digest({"kind": step.kind, "what": what, "deps": {n: hashes[n] for n in step.needs}})
        records = [(pid, _digest({"point": runner.train_config(pid, spec, values), "deps": hashes[step.id]}))
                   for pid, values in points] if points else [(step.id, hashes[step.id])]
        for sid, digest in records:
            runner.record(sid, digest, {"metrics": {}})


def test_records_of_older_versions_still_count_and_are_made_canonical(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/x/data").mkdir(parents=True)
    recipe = write_recipe(tmp_path / "r.yaml")
    write_old_records(Runner(load_recipe(recipe), "runs/x", "runs/x/data", overrides=TINY))
    for data, out in spellings(tmp_path):
        lines = dry_run(recipe, data, out, capsys)
        assert all(line.endswith(": done") for line in lines), (data, out, lines)

    monkeypatch.setattr(Runner, "execute", lambda *args: pytest.fail("a finished step ran again"))
    base = tmp_path / "runs/x"
    assert main(["-q", "reproduce", str(recipe), "--data-root", str(base / "data"), "--out", str(base), *TINY]) == 0
    assert capsys.readouterr().err.count("done, skipped") == 8  # 6 steps and the sweep's 2 points
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the old spelling means nothing here: records are canonical now
    assert all(line.endswith(": done") for line in dry_run(recipe, str(base / "data"), str(base), capsys))
