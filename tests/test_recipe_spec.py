"""Recipe steps as typed records: parsed once, bad keys refused naming the file, step and key, and step
hashes unchanged from the version that hashed the specs as plain dicts (recorded runs stay done)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soundsift.errors import ConfigError
from soundsift.training.recipe import Runner, load_recipe
from soundsift.training.recipe_spec import RECIPES, EvaluateSpec, SweepSpec, TeachersSpec, TrainSpec

#: every step kind and spec key, the estimator forms included
RECIPE = {
    "name": "fixed", "data_format": "clotho",
    "steps": [
        {"id": "a", "train": "demo/stage1.yaml", "row": {"encoder": "cnn"}},
        {"id": "b", "train": "demo/stage1.yaml", "set": {"seed": 1, "loss": {"tau": 0.07}}, "optional": "extra"},
        {"id": "ta", "teachers": {"model": "a", "split": "development"}},
        {"id": "tb", "teachers": {"model": "b", "split": "development", "batch_size": 8, "half": True}},
        {"id": "mix", "teachers": {"estimator": "mix", "teachers": ["ta", "tb"], "weights": [0.5, 0.5]}},
        {"id": "cs", "teachers": {"estimator": "caption-similarity", "text_model": "minilm"}},
        {"id": "zs", "teachers": {"estimator": "model", "model": "zero-shot"}},
        {"id": "s2", "train": "demo/stage2.yaml", "init_from": "a", "teachers": ["ta", "mix"],
         "set": {"optim.lr": 1.0e-3}, "expected": {"paper": {"mAP@10": 10.0}}},
        {"id": "sup", "train": "demo/stage2.yaml", "init_from": "a",
         "set": {"teachers": [], "loss.loss_weight": 1, "loss.distill_weight": 0}},
        {"id": "ev", "evaluate": {"model": "s2", "split": "evaluation", "max_seconds": 5}},
        {"id": "sw", "sweep": {"train": "demo/stage2.yaml", "init_from": "b",
                               "grid": {"loss": [{"loss_weight": 0.5, "distill_weight": 0.5}],
                                        "optim.lr": [1.0e-3, 1.0e-4], "teachers": [["ta"], ["ta", "tb"]]}}},
    ],
}
TINY = ["model.audio_encoder={name: cnn, size: tiny}", "model.text_encoder={name: tiny-bert}", "model.embed_dim=16"]
#: the hashes soundsift recorded for RECIPE before step specs were typed (computed with that version)
RECORDED = {"a": "fac3b8146e14c06d", "b": "44b95f413af2f7bf", "ta": "fd3a70a77a9a27b0", "tb": "fd07c25fc166b310",
            "mix": "4b3b0c5e415727df", "cs": "803c2a38313e120e", "zs": "305b541a9b4308b7", "s2": "d600642afe34d5f3",
            "sup": "938a357250e7fda1", "ev": "a81e1df94aef6f5e", "sw": "24a772cc03b64388",
            "sw/p000": "e9ca90ee6addfe04", "sw/p001": "a57a9e49a288e1ba", "sw/p002": "db5220f0b3176592",
            "sw/p003": "898900045b2a52dd"}


def write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_step_hashes_are_those_recorded_before_specs_were_typed(tmp_path):
    runner = Runner(load_recipe(write(tmp_path / "r.yaml", RECIPE)), "/nonexistent-soundsift/out",
                    "/nonexistent-soundsift/data", include=["extra"], overrides=TINY)
    got = {}
    for step in runner.selected():
        got[step.id] = runner.digest(step.id)
        for pid, values in runner.points(step) if step.kind == "sweep" else ():
            got[pid] = runner.digest(step.id, (pid, values))
    assert got == RECORDED


def test_steps_are_typed_records_of_their_kind(tmp_path):
    steps = load_recipe(write(tmp_path / "r.yaml", RECIPE)).steps
    assert {sid: type(s.spec) for sid, s in steps.items()} == {
        "a": TrainSpec, "b": TrainSpec, "ta": TeachersSpec, "tb": TeachersSpec, "mix": TeachersSpec,
        "cs": TeachersSpec, "zs": TeachersSpec, "s2": TrainSpec, "sup": TrainSpec, "ev": EvaluateSpec, "sw": SweepSpec}
    assert steps["s2"].spec.init_from == "a" and steps["s2"].spec.teacher_steps() == ["ta", "mix"]
    assert steps["sup"].spec.teacher_steps() == [] and steps["sup"].spec.settings["loss.loss_weight"] == 1
    assert steps["tb"].spec.batch_size == 8 and steps["tb"].spec.half and not steps["tb"].spec.estimates
    assert steps["ta"].spec.batch_size == 32 and steps["ev"].spec.format is None  # defaults
    assert steps["mix"].spec.estimates and steps["mix"].spec.split == "development" and steps["ev"].needs == ["s2"]
    assert steps["zs"].needs == [] and steps["mix"].needs == ["ta", "tb"] and steps["sw"].needs == ["b", "ta", "tb"]
    with pytest.raises(ValueError):
        steps["ta"].spec.split = "evaluation"  # frozen


def test_to_dict_is_each_packaged_step_as_written():
    """The hash of a teachers or evaluate step is over to_dict(): it must be the YAML body, untouched."""
    for path in sorted(RECIPES.glob("*.yaml")):
        written = {s["id"]: s for s in yaml.safe_load(path.read_text())["steps"]}
        for sid, step in load_recipe(path).steps.items():
            body = written[sid][step.kind]
            if isinstance(body, dict):
                assert step.spec.to_dict() == body, (path.name, sid)
            else:  # a train step: its keys beside id, row, expected, optional
                assert step.spec.to_dict() == {k: v for k, v in written[sid].items()
                                               if k not in ("id", "row", "expected", "optional")}


@pytest.mark.parametrize("step, message", [
    ({"id": "t", "teachers": {"model": "a", "splt": "development"}}, "step 't': teachers: unknown key 'splt'; known: "),
    ({"id": "t", "teachers": {"model": "a", "batch_size": "8"}}, "step 't': teachers: batch_size: input should be a "
                                                                  "valid integer, got '8'"),
    ({"id": "t", "teachers": {"split": "development"}}, "step 't': teachers needs a 'model' \\(or an 'estimator'\\)"),
    ({"id": "e", "evaluate": {"split": "evaluation"}}, "step 'e': evaluate: needs 'model'"),
    ({"id": "x", "train": "demo/stage1.yaml", "int_from": "a"}, "step 'x': unknown key 'int_from'; known: init_from, "
                                                                "set, teachers, train"),
    ({"id": "x", "train": "demo/stage1.yaml", "set": [1]}, "step 'x': set: input should be a valid dictionary"),
    ({"id": "e", "evaluate": {"model": "a"}, "init_from": "a"}, "step 'e': unknown keys \\['init_from'\\] beside "
                                                                "'evaluate'"),
    ({"id": "s", "sweep": {"train": "demo/stage2.yaml", "grid": {}}}, "sweep 's' has an empty grid"),
    ({"id": "s", "sweep": {"train": "demo/stage2.yaml", "grid": {"optim.lr": 1}}}, "step 's': sweep: grid.optim.lr: "),
])
def test_a_bad_step_is_one_line_naming_the_file_the_step_and_the_key(tmp_path, step, message):
    path = write(tmp_path / "bad.yaml", {"name": "bad", "steps": [{"id": "a", "train": "demo/stage1.yaml"}, step]})
    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_synth_and_measure_are_typed_with_their_defaults(tmp_path):
    recipe = load_recipe("estimators")
    assert (recipe.synth.preset, recipe.synth.seed) == ("small", 0)
    assert (recipe.measure.batch_size, recipe.measure.tau, recipe.measure.rounds) == (64, 0.05, 10)
    steps = [{"id": "a", "train": "demo/stage1.yaml"}]
    bare = load_recipe(write(tmp_path / "m.yaml", {"steps": steps, "measure": {}, "synth": {}}))
    assert bare.synth is None and bare.measure.tau == 0.05  # an empty synth generates nothing, as before
    with pytest.raises(ConfigError, match="'measure' must be a mapping, got 3"):
        load_recipe(write(tmp_path / "m.yaml", {"steps": steps, "measure": 3}))
    with pytest.raises(ConfigError, match="'synth': unknown key 'size'"):
        load_recipe(write(tmp_path / "m.yaml", {"steps": steps, "synth": {"size": 3}}))
