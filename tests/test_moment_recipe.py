"""``soundsift reproduce moments``: the packaged recipe prints its steps in dependency order; a tiny
recipe of the same kinds (a tiny random model, the tiny synth --moments preset) runs end to end, writes
results.md with the table and paired intervals, and a second run skips every step; --data-root runs it
on a CASTELLA layout without generating data; bad moment recipes are refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import ConfigError  # noqa: E402
from soundsift.training.moment_recipe import train_options  # noqa: E402
from soundsift.training.recipe_spec import TrainMomentsSpec, load_recipe  # noqa: E402
from test_index import make_model  # noqa: E402
from test_moment_layout import as_castella  # noqa: E402


def test_print_lists_the_steps_in_dependency_order(tmp_path, capsys):
    assert main(["reproduce", "moments", "--print", "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("soundsift synth --moments --preset small --seed 0 --out ")
    recipe = load_recipe("moments")
    assert len(lines) == 1 + len(recipe.steps)
    position = {}
    for sid in recipe.steps:
        out = str(tmp_path / "run" / sid)
        (index,) = [i for i, line in enumerate(lines) if f"--out {out} " in line + " " or f"--out {out}.jsonl" in line]
        position[sid] = index
    for sid, step in recipe.steps.items():
        assert all(position[need] < position[sid] for need in step.needs)
    assert recipe.steps["learned-soft-s0-test"].needs == ["learned-soft-s0"]
    assert "--distill-weight 0" in lines[position["learned-plain-s0"]]
    assert "--distill-weight" not in lines[position["learned-soft-s0"]]  # the default: soft targets on
    assert "--baseline window" in lines[position["window"]] and "--model zero-shot" in lines[position["window"]]


TINY = """
name: tiny-moments
title: tiny moments
task: moments
synth: {{preset: tiny, seed: 5}}
reference: window
steps:
  - {{id: window, moments: {{baseline: window, model: {model}, split: test}}, row: {{system: sliding window}}}}
  - {{id: random, moments: {{baseline: random, split: test}}}}
  - {{id: plain, train_moments: {{model: {model}, hidden: 8, steps: 3, distill_weight: 0}}}}
  - {{id: soft-s0, train_moments: {{model: {model}, hidden: 8, steps: 3, distill_weight: 1}}}}
  - {{id: soft-s1, train_moments: {{model: {model}, hidden: 8, steps: 3, distill_weight: 1, seed: 1}}}}
  - {{id: plain-test, moments: {{baseline: learned, moment_model: plain, split: test}}}}
  - {{id: soft-s0-test, moments: {{baseline: learned, moment_model: soft-s0, split: test}}, row: {{system: soft}}}}
  - {{id: soft-s1-test, moments: {{baseline: learned, moment_model: soft-s1, split: test}}, row: {{system: soft}}}}
"""


def test_a_tiny_recipe_runs_end_to_end_and_resumes(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY.format(model=make_model(tmp_path / "m.pt")))
    out = tmp_path / "run"
    assert main(["-q", "reproduce", str(recipe), "--out", str(out)]) == 0
    first = capsys.readouterr()
    assert (out / "data" / "synth_moments_info.json").is_file()
    summary = json.loads((out / "results.json").read_text())
    rows = {r["system"]: r for r in summary["rows"]}
    assert set(rows) == {"sliding window", "random", "plain-test", "soft", "soft (mean of 2)"}
    assert rows["soft (mean of 2)"]["steps"] == ["soft-s0-test", "soft-s1-test"]
    metrics = json.loads((out / "plain-test.json").read_text())
    assert rows["plain-test"]["mAP"] == metrics["mAP"] and rows["plain-test"]["R1@0.5"] == metrics["R1@0.5"]
    # the group row is the per-query mean: its metric is the mean of its members' (equal query sets)
    members = [json.loads((out / f"{s}.json").read_text())["mAP"] for s in ("soft-s0-test", "soft-s1-test")]
    assert rows["soft (mean of 2)"]["mAP"] == pytest.approx(sum(members) / 2, abs=0.02)
    assert "vs_reference" not in rows["sliding window"] and "95% CI" in rows["random"]["vs_reference"]["mAP"]
    low, high = rows["random"]["vs_reference"]["mAP"]["95% CI"]
    assert low <= rows["random"]["vs_reference"]["mAP"]["difference"] <= high
    md = (out / "results.md").read_text()
    assert "| soft (mean of 2) | soft-s0-test, soft-s1-test | evaluation |" in md and "mAP - window [95 % CI]" in md
    assert md in first.out
    # a second run skips every step and writes the same results
    assert main(["reproduce", str(recipe), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("done, skipped") == 8 and "running" not in err
    assert json.loads((out / "results.json").read_text()) == summary
    # --data-root: a CASTELLA layout on disk, nothing generated
    castella = tmp_path / "castella"
    as_castella(out / "data", castella)
    again = tmp_path / "again"
    assert main(["-q", "reproduce", str(recipe), "--out", str(again), "--data-root", str(castella),
                 "--only", "soft-s0-test"]) == 0
    assert not (again / "data").exists() and (again / "soft-s0-test.jsonl").is_file()
    assert json.loads((again / "results.json").read_text())["rows"][0]["n_queries"] == rows["soft"]["n_queries"]


def test_bad_moment_recipes_are_refused(tmp_path):
    def recipe(steps: str) -> Path:
        path = tmp_path / "r.yaml"
        path.write_text(f"name: r\ntask: moments\nsteps:\n{steps}")
        return path

    with pytest.raises(ConfigError, match="baseline 'sliding'"):
        load_recipe(recipe("  - {id: a, moments: {baseline: sliding, model: zero-shot}}\n"))
    with pytest.raises(ConfigError, match="needs 'moment_model', a train_moments step"):
        load_recipe(recipe("  - {id: a, moments: {baseline: learned}}\n"))
    with pytest.raises(ConfigError, match="only moments and train_moments steps"):
        load_recipe(recipe("  - {id: a, moments: {baseline: random}}\n  - {id: b, train: demo/stage1-cnn.yaml}\n"))
    with pytest.raises(ConfigError, match="unknown key 'epochs'"):
        load_recipe(recipe("  - {id: a, train_moments: {epochs: 3}}\n"))
    spec = TrainMomentsSpec(hidden=8)
    assert train_options(spec, ["steps=7", "tau=0.1"]).steps == 7
    with pytest.raises(ConfigError, match="key=value overrides of"):
        train_options(spec, ["optim.epochs=1"])
    with pytest.raises(ConfigError, match="steps must be an integer"):
        train_options(spec, ["steps=1.5"])
