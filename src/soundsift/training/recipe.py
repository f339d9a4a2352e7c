"""``soundsift reproduce``: run a recipe — the steps of a paper table — in dependency order, resumably.

The recipe and its steps are typed records (``training.recipe_spec``). A step's hash covers its resolved
settings, with its paths canonical (``runs/x``, ``./runs/x/`` and ``/abs/runs/x`` hash alike), and the
hashes of the steps it uses. Finished steps are recorded in ``{out}/.reproduce/{id}.json``; a step whose
record has the current hash is skipped, a killed train step resumes from its last checkpoint, and a
changed step runs again from scratch, and so does everything that depends on it. Outputs made by the
plain commands of ``--print`` are adopted when they match. The runner only orders, skips and launches:
the work is ``train``, ``make_teacher`` and ``evaluate``. At the end, ``results.json`` / ``results.md``
put our test metrics next to the paper's (``training.results``). With the recipe's ``measure``, each
teachers step is scored against the benchmark's ground truth.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from soundsift.atomic import atomic_write
from soundsift.config import Config, EstimatorConfig, build_config, load_config, resolve_config_path
from soundsift.errors import ConfigError
from soundsift.training import moment_recipe
from soundsift.training.paths import canonical, canonical_config
from soundsift.training.recipe_print import collect_command, commands
from soundsift.training.recipe_spec import (
    MOMENT_KINDS,
    ModelStepSpec,
    Recipe,
    Step,
    SynthSpec,
    TeachersSpec,
    TrainSpec,
    flatten,
    load_recipe,
    refs,
    resolve_recipe_path,
)
from soundsift.training.results import write_results, yaml_value

__all__ = ["Recipe", "Runner", "Step", "check_train_configs", "load_recipe", "plan", "resolve_recipe_path"]

def _stable(config: Config) -> dict[str, Any]:
    """A train config as hashed and compared (its file form): without the ``estimator`` section when it
    is the default, and without ``data.relevance`` when unset, so that runs recorded before these
    settings existed keep their hashes."""
    written = config.to_dict()
    if config.estimator == EstimatorConfig():
        del written["estimator"]
    if config.data.relevance is None:
        del written["data"]["relevance"]
    return written


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Runner:
    """Runs (or prints) one recipe into ``out``."""

    def __init__(self, recipe: Recipe, out: str | Path, data_root: str | Path | None = None,
                 include: Iterable[str] = (), only: Iterable[str] = (), progress: bool = True,
                 overrides: Iterable[str] = (), log: Callable[[str], None] | None = None) -> None:
        self.recipe, self.out, self.progress = recipe, Path(out), progress
        self.overrides = list(overrides)  # applied to every train step, last
        self.data_root = str(data_root or recipe.data_root or (self.out / "data" if recipe.synth else ""))
        if not self.data_root:
            raise ConfigError(f"{recipe.path}: no data root: pass --data-root DIR")
        self.include = set(include)
        self.steps = {sid: s for sid, s in recipe.steps.items() if s.optional is None or s.optional in self.include}
        unknown = [s for s in only if s not in self.steps]
        if unknown:
            raise ConfigError(f"--only {', '.join(unknown)}: not steps of {recipe.name}; steps: {', '.join(self.steps)}")
        self.only = set(only)
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.hashes: dict[str, str] = {}  # as this runner spells its paths (see spellings)
        self._spellings: list[Runner] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.data_cache: dict = {}

    # -------------------------------------------------------------------------------- resolution

    def selected(self) -> list[Step]:
        """The steps to run: ``only`` and what they need (all steps without ``only``)."""
        if not self.only:
            return list(self.steps.values())
        keep: set[str] = set()
        stack = list(self.only)
        while stack:
            sid = stack.pop()
            if sid not in keep:
                keep.add(sid)
                stack.extend(self.steps[sid].needs)
        return [s for sid, s in self.steps.items() if sid in keep]

    def model_path(self, sid: str) -> Path:
        return self.out / sid / "model.pt"

    def teacher_path(self, sid: str) -> Path:
        return self.out / "teachers" / f"{sid}.safetensors"

    def data_format(self, spec: ModelStepSpec) -> str:
        """The dataset format a teachers or evaluate step reads: its own, else the recipe's."""
        return spec.format or self.recipe.data_format

    def model_ref(self, name: str) -> str:
        """A teachers/evaluate step's ``model``: a step's model file, else a published model's name."""
        return str(self.model_path(name)) if name in self.recipe.steps else name

    def generates_data(self) -> bool:
        """The recipe's generated benchmark goes to ``{out}/data`` (no data root was given)."""
        return bool(self.recipe.synth) and Path(self.data_root) == self.out / "data"

    def ensure_data(self) -> None:
        if self.recipe.task == "moments":
            if self.generates_data() and not (Path(self.data_root) / "synth_moments_info.json").is_file():
                from soundsift.data.synth.moments import generate_moments

                synth = self.recipe.synth or SynthSpec()
                self.log(f"reproduce: generating the moment benchmark ({synth.preset}) in {self.data_root}")
                generate_moments(self.data_root, preset=synth.preset, seed=synth.seed, progress=self.progress)
            return
        if self.generates_data() and not (Path(self.data_root) / "synth_ground_truth_development.npz").is_file():
            from soundsift.data.synth.benchmark import generate

            synth = self.recipe.synth or SynthSpec()
            self.log(f"reproduce: generating the benchmark ({synth.preset}) in {self.data_root}")
            generate(self.data_root, preset=synth.preset, seed=synth.seed, progress=self.progress)

    def train_config(self, sid: str, spec: TrainSpec, extra: dict[str, Any] | None = None) -> Config:
        """The resolved config of a train step (or a sweep point) with paths of the steps it uses."""
        values = {"data.root": self.data_root, **flatten("", spec.settings or {}), **(extra or {})}
        values["out_dir"] = str(self.out / sid)
        if spec.init_from:
            values["init_from"] = str(self.model_path(spec.init_from))
        teachers = values.pop("teachers", spec.teachers)
        if teachers is not None:
            values["teachers"] = [str(self.teacher_path(t)) for t in refs(teachers)]
        return load_config(spec.train, [*(f"{k}={yaml_value(v)}" for k, v in values.items()), *self.overrides])

    def points(self, step: Step) -> list[tuple[str, dict[str, Any]]]:
        """A sweep's grid points: (point id, {key: value}) in a fixed order."""
        axes = [[flatten(key, value) if isinstance(value, dict) else {key: value} for value in values]
                for key, values in (step.spec.grid or {}).items()]
        return [(f"{step.id}/p{i:03d}", {k: v for part in combo for k, v in part.items()})
                for i, combo in enumerate(itertools.product(*axes))]

    def step_hash(self, step: Step) -> str:
        """A step's settings and the hashes of the steps it uses, with the paths as this runner spells them."""
        deps = {need: self.hash_of(need) for need in step.needs}
        if step.kind == "train":
            what: Any = _stable(self.train_config(step.id, step.spec))
        elif step.kind == "sweep":
            what = [(pid, _stable(self.train_config(pid, step.spec, values))) for pid, values in self.points(step)]
        else:
            what = {"data_root": self.data_root, "format": self.recipe.data_format, **step.spec.to_dict()}
            if step.kind == "train_moments" and self.overrides:
                what["overrides"] = self.overrides
        return _digest({"kind": step.kind, "what": what, "deps": deps})

    def hash_of(self, sid: str, point: tuple[str, dict[str, Any]] | None = None) -> str:
        """The hash of step ``sid``, or of a sweep ``sid``'s ``point`` (its id and values)."""
        if point is not None:
            return _digest({"point": self.train_config(point[0], self.steps[sid].spec, point[1]),
                            "deps": self.hash_of(sid)})
        if sid not in self.hashes:
            self.hashes[sid] = self.step_hash(self.recipe.steps[sid])
        return self.hashes[sid]

    def spellings(self) -> list[Runner]:
        """This runner hashing its paths canonical (absolute, symlinks resolved), then spelled the two ways
        that records of older versions may have hashed them.

        Records are written with the canonical hash: every spelling of a folder, from any directory, gives
        it. Older versions hashed the paths as typed; rather than invalidate finished tables, a record
        also counts when its hash is that of this runner's own spelling, or of the paths relative to the
        working directory, how they are usually typed (a table recorded as ``runs/demo/data`` is done when
        ``/abs/runs/demo/data/`` is given now). Each spelling hashes the steps a step uses spelled alike,
        as those versions did. A run rewrites such a record with the canonical hash (``run_one``).
        """
        if not self._spellings:
            out, root = Path(canonical(self.out)), canonical(self.data_root)
            spelled = ((out, root), (self.out, self.data_root), (Path(os.path.relpath(out)), os.path.relpath(root)))
            self._spellings = [self.respelled(*paths) for paths in dict.fromkeys(spelled)]
        return self._spellings

    def respelled(self, out: Path, data_root: str) -> Runner:
        """This runner with its paths spelled otherwise, hashing afresh (only to hash)."""
        if (out, data_root) == (self.out, self.data_root):
            return self
        view = copy.copy(self)
        view.out, view.data_root, view.hashes, view._spellings = out, data_root, {}, []
        return view

    def digest(self, sid: str, point: tuple[str, dict[str, Any]] | None = None) -> str:
        """The hash a finished step (or sweep point) is recorded with: over canonical paths."""
        return self.spellings()[0].hash_of(sid, point)

    def is_done(self, record: dict[str, Any] | None, sid: str, point: tuple[str, dict[str, Any]] | None = None) -> bool:
        """Whether ``record`` is of the step's current settings, however its paths were spelled."""
        return record is not None and any(record.get("hash") == view.hash_of(sid, point) for view in self.spellings())

    # -------------------------------------------------------------------------------- records

    def record_path(self, sid: str) -> Path:
        return self.out / ".reproduce" / f"{sid.replace('/', '__')}.json"

    def recorded(self, sid: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.record_path(sid).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def record(self, sid: str, digest: str, result: dict[str, Any]) -> None:
        text = json.dumps({"hash": digest, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **result}, indent=2)
        atomic_write(self.record_path(sid), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def adoptable(self, step: Step, sid: str, config: Config | None) -> dict[str, Any] | None:
        """The result of outputs that a plain command already made for this step, if they match."""
        if config is not None:
            out_dir = Path(config.out_dir)
            saved, metrics = out_dir / "config.yaml", out_dir / "metrics.json"
            if not (metrics.is_file() and saved.is_file() and (out_dir / "model.pt").is_file()):
                return None
            try:
                written = build_config(yaml.safe_load(saved.read_text(encoding="utf-8")))
            except ConfigError:  # not a config this version writes: train again
                return None
            if {k: v for k, v in _stable(canonical_config(written)).items() if k != "model"} != \
                    {k: v for k, v in _stable(canonical_config(config)).items() if k != "model"}:
                return None
            return {"metrics": json.loads(metrics.read_text(encoding="utf-8"))}
        if step.kind in MOMENT_KINDS:
            return moment_recipe.adoptable(self, step, sid)
        if step.kind == "teachers":
            return self.teacher_result(step.spec, sid) if self.teacher_path(sid).is_file() else None
        output = self.out / f"{sid}.json"
        if not output.is_file():
            return None
        metrics = json.loads(output.read_text(encoding="utf-8"))
        return {"metrics": {"test": metrics["text_to_audio"], **metrics}}

    # -------------------------------------------------------------------------------- running

    def run(self) -> dict[str, dict[str, Any]]:
        """Run every selected step (skipping finished ones); returns each step's result."""
        self.ensure_data()
        for step in self.selected():
            if step.kind == "sweep":
                self.results[step.id] = self.run_sweep(step)
            else:
                config = self.train_config(step.id, step.spec) if step.kind == "train" else None
                self.results[step.id] = self.run_one(step, step.id, config)
        return self.results

    def run_one(self, step: Step, sid: str, config: Config | None,
                point: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run step ``sid`` (a sweep's ``point``: its id and values) unless its record is current."""
        previous, digest = self.recorded(sid), self.digest(step.id, point)
        if self.is_done(previous, step.id, point):
            if previous["hash"] != digest:  # recorded by an older version: now canonical
                self.record(sid, digest, {k: v for k, v in previous.items() if k != "hash"})
            self.log(f"reproduce: {sid}: done, skipped")
            return previous
        if previous is None and (adopted := self.adoptable(step, sid, config)) is not None:
            self.log(f"reproduce: {sid}: finished outputs found, adopted")
            self.record(sid, digest, adopted)
            return adopted
        self.log(f"reproduce: {sid}: running ({'train' if point else step.kind})")
        result = self.execute(step, sid, config, fresh=previous is not None)
        self.record(sid, digest, result)
        return result

    def execute(self, step: Step, sid: str, config: Config | None, fresh: bool) -> dict[str, Any]:
        if config is not None:
            from soundsift.training.run import train

            out_dir = Path(config.out_dir)
            finished = (out_dir / "model.pt").is_file() and (out_dir / "metrics.json").is_file()
            resumable = (out_dir / "checkpoints" / "last.ckpt").is_file() and not finished
            run = train(config, self.progress, overwrite=fresh or not resumable and out_dir.exists(),
                        data_cache=self.data_cache)
            return {"metrics": run.metrics}
        if step.kind in MOMENT_KINDS:
            return moment_recipe.execute(self, step, sid)
        spec = step.spec
        fmt = self.data_format(spec)
        if isinstance(spec, TeachersSpec):
            if spec.estimates:
                from soundsift.training.estimators import EstimateOptions, write_estimate

                write_estimate(spec.estimator or "ensemble", EstimateOptions(
                    self.data_root, self.teacher_path(sid), fmt, spec.split,
                    [self.model_ref(spec.model)] if spec.model else [],
                    [self.teacher_path(t) for t in refs(spec.teachers)], spec.weights,
                    self.model_ref(spec.text_model or "minilm"), spec.max_seconds, spec.batch_size,
                    spec.half, progress=self.progress))
            else:
                from soundsift.training.teachers import make_teacher

                make_teacher(self.model_ref(spec.model), self.data_root, self.teacher_path(sid), fmt, spec.split,
                             spec.max_seconds, spec.batch_size, spec.half, progress=self.progress)
            return self.teacher_result(spec, sid)
        from soundsift.training.evaluate import evaluate

        metrics = evaluate(self.model_path(spec.model), self.data_root, fmt, spec.split, spec.max_seconds,
                           spec.batch_size, progress=self.progress)
        text = json.dumps(metrics, indent=2)
        atomic_write(self.out / f"{sid}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return {"metrics": {"test": metrics["text_to_audio"], **metrics}}

    def teacher_result(self, spec: TeachersSpec, sid: str) -> dict[str, Any]:
        """A teachers step's result: with ``measure``, its estimate scored against the ground truth."""
        if self.recipe.measure is None:
            return {}
        from soundsift.training.estimators import measure_teacher_file

        m = self.recipe.measure
        scores = measure_teacher_file(self.teacher_path(sid), self.data_root, spec.split, batch_size=m.batch_size,
                                      tau=float(m.tau), rounds=m.rounds, seed=m.seed)
        if scores is None:
            self.log(f"reproduce: {sid}: no ground truth in {self.data_root}: the estimate is not measured")
            return {}
        self.log(f"reproduce: {sid}: AUC {scores['auc']:.3f}, softmax mass {scores['softmax_mass']:.3f}")
        return {"correspondences": scores}

    def run_sweep(self, step: Step) -> dict[str, Any]:
        grid = []
        for pid, values in self.points(step):
            config = self.train_config(pid, step.spec, values)
            result = self.run_one(step, pid, config, (pid, values))
            metrics = result["metrics"]
            grid.append({"point": pid, "values": values, "val": metrics.get("val") or {},
                         "test": metrics.get("test") or {}})
        best = max(grid, key=lambda g: g["val"].get("mAP@10", float("-inf")))
        self.log(f"reproduce: {step.id}: best of {len(grid)} points on validation mAP@10: {best['point']} {best['values']}")
        return {"metrics": {"test": best["test"], "val": best["val"]}, "best": best["point"], "grid": grid}

    # -------------------------------------------------------------------------------- output

    def commands(self) -> list[str]:
        """The selected steps as plain shell commands (``--print``; training.recipe_print)."""
        return commands(self)

    def collect_command(self) -> str:
        """The command that, after the printed steps ran, adopts their outputs and writes the results."""
        return collect_command(self)

    def write_results(self) -> dict[str, Any]:
        """``results.json``, ``.md``, ``.csv`` and ``.tex`` from the steps' results (training.results; a
        moment recipe: ``results.json`` and ``.md``, training.moment_recipe)."""
        if self.recipe.task == "moments":
            return moment_recipe.write_results(self)
        return write_results(self)

def check_train_configs(recipe: Recipe) -> None:
    """Every train config a recipe names exists (before anything runs)."""
    for step in recipe.steps.values():
        if isinstance(step.spec, TrainSpec):  # a sweep too
            resolve_config_path(step.spec.train)


def plan(recipe: Recipe, runner: Runner) -> list[str]:
    """One line per selected step: what it is and whether it would run or be skipped."""
    lines = []
    for step in runner.selected():
        if step.kind == "sweep":  # done when all its points are
            done = all(runner.is_done(runner.recorded(pid), step.id, (pid, values)) for pid, values in runner.points(step))
        else:
            done = runner.is_done(runner.recorded(step.id), step.id)
        state = "done" if done else "to run"
        needs = f" (needs {', '.join(step.needs)})" if step.needs else ""
        lines.append(f"{step.id}: {step.kind}{needs}: {state}")
    return lines
