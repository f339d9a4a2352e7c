"""``soundsift reproduce``: run a recipe — the steps of a paper table — in dependency order, resumably.

A recipe (YAML, ``recipes/``) lists steps; each is one of

- ``train: CONFIG`` (+ ``set: {key: value}``, ``init_from: STEP``, ``teachers: [STEP, ...]``): one
  training run into ``{out}/{id}``;
- ``teachers: {model: STEP, split: S}``: the model's embeddings of a split, ``{out}/teachers/{id}.safetensors``;
  with ``estimator: NAME`` (``teachers: [STEP, ...]``, ``weights``, ``text_model``; ``model`` may also be a
  published name such as ``zero-shot``) any correspondence estimator's targets (training.estimators);
- ``evaluate: {model: STEP, split: S}``: metrics of a model, ``{out}/{id}.json``;
- ``sweep: {train: CONFIG, grid: {key: [values]}, ...}``: a train step per grid point, the best on
  validation mAP@10 selected, the grid reported.

A step's hash covers its resolved settings, with its paths canonical (``runs/x``, ``./runs/x/`` and
``/abs/runs/x`` hash alike), and the hashes of the steps it uses. Finished steps are
recorded in ``{out}/.reproduce/{id}.json``; a step whose record has the current hash is skipped, a
killed train step resumes from its last checkpoint, and a changed step runs again from scratch, and so
does everything that depends on it. Outputs made by the plain commands of ``--print`` are adopted when
they match. The runner only orders, skips and launches: the work is ``train``, ``make_teacher`` and
``evaluate``. At the end, ``results.json`` / ``results.md`` put our test metrics next to the paper's.

A recipe may also name ``synth: {preset, seed}`` (without a data root the generated benchmark is written
to ``{out}/data`` first) and ``measure: {batch_size, tau, rounds}``: each teachers step is then scored
against the benchmark's ground truth, and each stage-2 row gets its estimate's AUC and softmax mass.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from soundsift.atomic import atomic_write
from soundsift.config import Config, EstimatorConfig, build_config, load_config, resolve_config_path
from soundsift.errors import ConfigError
from soundsift.training.paths import canonical, canonical_config
from soundsift.training.results import refs, write_results, yaml_value

KINDS = ("train", "teachers", "evaluate", "sweep")
ESTIMATOR_KEYS = ("estimator", "teachers", "weights", "text_model")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@dataclass
class Step:
    id: str
    kind: str
    spec: dict[str, Any]
    needs: list[str]
    optional: str | None = None
    expected: dict[str, dict[str, float]] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    path: Path
    title: str
    steps: dict[str, Step]  # in dependency order
    data_root: str | None
    data_format: str
    synth: dict[str, Any] | None = None
    measure: dict[str, Any] | None = None


def resolve_recipe_path(name: str | Path) -> Path:
    """A path as given, else a packaged recipe by name (``table1``, ``recipes/table1.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    for candidate in (RECIPES / path.name, RECIPES / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise ConfigError(f"{name}: recipe not found; packaged recipes: {known}")


def load_recipe(name: str | Path) -> Recipe:
    """Read and check a recipe; steps come back in an order where every step follows what it needs."""
    path = resolve_recipe_path(name)
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise ConfigError(f"{path}: a recipe is a mapping with a 'steps' list")
    steps: dict[str, Step] = {}
    for i, raw in enumerate(doc["steps"]):
        # ``teachers`` names the kind when it is a mapping ({model, split}); a list is a train step's teachers
        kinds = [k for k in KINDS if k in raw and (k != "teachers" or isinstance(raw[k], dict))] \
            if isinstance(raw, dict) else []
        if len(kinds) != 1 or not raw.get("id"):
            raise ConfigError(f"{path}: step {i + 1} needs an 'id' and exactly one of {', '.join(KINDS)}")
        kind, sid = kinds[0], str(raw["id"])
        if sid in steps:
            raise ConfigError(f"{path}: step id {sid!r} appears twice")
        spec = {k: v for k, v in raw.items() if k not in ("id", "optional", "expected", "row")}
        body = spec[kind] if isinstance(spec[kind], dict) else {}
        needs = refs(spec.get("init_from")) + refs(spec.get("teachers") if kind != "teachers" else None)
        needs += refs(body.get("model")) + refs(body.get("init_from")) + refs(body.get("teachers"))
        for values in (body.get("grid") or {}).values() if kind == "sweep" else ():
            for value in values:
                needs += [t for t in value if isinstance(t, str)] if isinstance(value, list) else []
        steps[sid] = Step(sid, kind, spec, list(dict.fromkeys(needs)), raw.get("optional"),
                          raw.get("expected") or {}, raw.get("row") or {})
    for step in steps.values():
        body = step.spec[step.kind] if isinstance(step.spec[step.kind], dict) else {}
        model = body.get("model")
        if step.kind == "teachers" and isinstance(model, str) and model not in steps and _published(model):
            step.needs.remove(model)  # a published model (zero-shot), not a step
        if step.kind == "teachers" and body.get("text_model") in steps:
            step.needs.append(body["text_model"])  # caption-similarity with a trained model's text tower
        for need in step.needs:
            if need not in steps:
                raise ConfigError(f"{path}: step {step.id!r} uses {need!r}, which is not a step of the recipe")
            if steps[need].kind == "sweep":
                raise ConfigError(f"{path}: step {step.id!r} uses the sweep {need!r}; a sweep ends a recipe")
    order: list[str] = []

    def visit(sid: str, trail: tuple[str, ...]) -> None:
        if sid in trail:
            raise ConfigError(f"{path}: steps depend on each other in a circle: {' -> '.join((*trail, sid))}")
        if sid not in order:
            for need in steps[sid].needs:
                visit(need, (*trail, sid))
            order.append(sid)

    for sid in steps:
        visit(sid, ())
    for key in ("synth", "measure"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping, got {doc[key]!r}")
    return Recipe(str(doc.get("name", path.stem)), path, str(doc.get("title", "")),
                  {sid: steps[sid] for sid in order}, doc.get("data_root"), str(doc.get("data_format", "clotho")),
                  doc.get("synth"), doc.get("measure"))


def _published(name: str) -> bool:
    from soundsift.checkpoints.load import PUBLISHED

    return name in PUBLISHED


def _stable(config: Config) -> dict[str, Any]:
    """A train config as hashed and compared (its file form): without the ``estimator`` section when it
    is the default, so that runs recorded before estimators were configurable keep their hashes."""
    written = config.to_dict()
    if config.estimator == EstimatorConfig():
        del written["estimator"]
    return written


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{"loss": {"loss_weight": 1}}`` -> ``{"loss.loss_weight": 1}`` (a mapping value sets several keys)."""
    if isinstance(value, dict) and not prefix.endswith("_encoder"):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


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

    def model_ref(self, name: str) -> str:
        """A teachers/evaluate step's ``model``: a step's model file, else a published model's name."""
        return str(self.model_path(name)) if name in self.recipe.steps else name

    def generates_data(self) -> bool:
        """The recipe's generated benchmark goes to ``{out}/data`` (no data root was given)."""
        return bool(self.recipe.synth) and Path(self.data_root) == self.out / "data"

    def ensure_data(self) -> None:
        if self.generates_data() and not (Path(self.data_root) / "synth_ground_truth_development.npz").is_file():
            from soundsift.data.synth.benchmark import generate

            synth = self.recipe.synth or {}
            self.log(f"reproduce: generating the benchmark ({synth.get('preset', 'small')}) in {self.data_root}")
            generate(self.data_root, preset=synth.get("preset", "small"), seed=int(synth.get("seed", 0)),
                     progress=self.progress)

    def train_config(self, sid: str, spec: dict[str, Any], extra: dict[str, Any] | None = None) -> Config:
        """The resolved config of a train step (or a sweep point) with paths of the steps it uses."""
        values = {"data.root": self.data_root, **_flatten("", spec.get("set") or {}), **(extra or {})}
        values["out_dir"] = str(self.out / sid)
        if spec.get("init_from"):
            values["init_from"] = str(self.model_path(spec["init_from"]))
        teachers = values.pop("teachers", spec.get("teachers"))
        if teachers is not None:
            values["teachers"] = [str(self.teacher_path(t)) for t in refs(teachers)]
        return load_config(spec["train"], [*(f"{k}={yaml_value(v)}" for k, v in values.items()), *self.overrides])

    def points(self, step: Step) -> list[tuple[str, dict[str, Any]]]:
        """A sweep's grid points: (point id, {key: value}) in a fixed order."""
        grid = step.spec["sweep"].get("grid") or {}
        if not grid:
            raise ConfigError(f"{self.recipe.path}: sweep {step.id!r} has an empty grid")
        axes = [[_flatten(key, value) if isinstance(value, dict) else {key: value} for value in values]
                for key, values in grid.items()]
        return [(f"{step.id}/p{i:03d}", {k: v for part in combo for k, v in part.items()})
                for i, combo in enumerate(itertools.product(*axes))]

    def step_hash(self, step: Step) -> str:
        """A step's settings and the hashes of the steps it uses, with the paths as this runner spells them."""
        deps = {need: self.hash_of(need) for need in step.needs}
        if step.kind == "train":
            what: Any = _stable(self.train_config(step.id, step.spec))
        elif step.kind == "sweep":
            what = [(pid, _stable(self.train_config(pid, step.spec["sweep"], values))) for pid, values in self.points(step)]
        else:
            what = {"data_root": self.data_root, "format": self.recipe.data_format, **step.spec[step.kind]}
        return _digest({"kind": step.kind, "what": what, "deps": deps})

    def hash_of(self, sid: str, point: tuple[str, dict[str, Any]] | None = None) -> str:
        """The hash of step ``sid``, or of a sweep ``sid``'s ``point`` (its id and values)."""
        if point is not None:
            return _digest({"point": self.train_config(point[0], self.steps[sid].spec["sweep"], point[1]),
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
        if step.kind == "teachers":
            return self.teacher_result(step.spec["teachers"], sid) if self.teacher_path(sid).is_file() else None
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
        spec = step.spec[step.kind]
        fmt = spec.get("format", self.recipe.data_format)
        if step.kind == "teachers":
            split, max_seconds, batch_size = spec.get("split", "development"), spec.get("max_seconds"), int(spec.get("batch_size", 32))
            if any(key in spec for key in ESTIMATOR_KEYS):
                from soundsift.training.estimators import EstimateOptions, write_estimate

                write_estimate(spec.get("estimator", "ensemble"), EstimateOptions(
                    self.data_root, self.teacher_path(sid), fmt, split,
                    [self.model_ref(spec["model"])] if spec.get("model") else [],
                    [self.teacher_path(t) for t in refs(spec.get("teachers"))], spec.get("weights"),
                    self.model_ref(spec.get("text_model", "minilm")), max_seconds, batch_size,
                    bool(spec.get("half", False)), progress=self.progress))
            else:
                from soundsift.training.teachers import make_teacher

                make_teacher(self.model_ref(spec["model"]), self.data_root, self.teacher_path(sid), fmt, split,
                             max_seconds, batch_size, bool(spec.get("half", False)), progress=self.progress)
            return self.teacher_result(spec, sid)
        model = self.model_path(spec["model"])
        from soundsift.training.evaluate import evaluate

        metrics = evaluate(model, self.data_root, fmt, spec.get("split", "evaluation"), spec.get("max_seconds"),
                           int(spec.get("batch_size", 32)), progress=self.progress)
        text = json.dumps(metrics, indent=2)
        atomic_write(self.out / f"{sid}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return {"metrics": {"test": metrics["text_to_audio"], **metrics}}

    def teacher_result(self, spec: dict[str, Any], sid: str) -> dict[str, Any]:
        """A teachers step's result: with ``measure``, its estimate scored against the ground truth."""
        if self.recipe.measure is None:
            return {}
        from soundsift.training.estimators import measure_teacher_file

        m = self.recipe.measure
        scores = measure_teacher_file(self.teacher_path(sid), self.data_root, spec.get("split", "development"),
                                      batch_size=int(m.get("batch_size", 64)), tau=float(m.get("tau", 0.05)),
                                      rounds=int(m.get("rounds", 10)), seed=int(m.get("seed", 0)))
        if scores is None:
            self.log(f"reproduce: {sid}: no ground truth in {self.data_root}: the estimate is not measured")
            return {}
        self.log(f"reproduce: {sid}: AUC {scores['auc']:.3f}, softmax mass {scores['softmax_mass']:.3f}")
        return {"correspondences": scores}

    def run_sweep(self, step: Step) -> dict[str, Any]:
        sweep = step.spec["sweep"]
        grid = []
        for pid, values in self.points(step):
            config = self.train_config(pid, sweep, values)
            result = self.run_one(step, pid, config, (pid, values))
            metrics = result["metrics"]
            grid.append({"point": pid, "values": values, "val": metrics.get("val") or {},
                         "test": metrics.get("test") or {}})
        best = max(grid, key=lambda g: g["val"].get("mAP@10", float("-inf")))
        self.log(f"reproduce: {step.id}: best of {len(grid)} points on validation mAP@10: {best['point']} {best['values']}")
        return {"metrics": {"test": best["test"], "val": best["val"]}, "best": best["point"], "grid": grid}

    # -------------------------------------------------------------------------------- output

    def commands(self) -> list[str]:
        """The selected steps as plain shell commands, one per step (a sweep: one per grid point), in
        dependency order; ``collect_command`` then writes the results."""
        lines, q = [], shlex.quote
        if self.generates_data():
            synth = self.recipe.synth or {}
            lines.append(f"soundsift synth --preset {q(str(synth.get('preset', 'small')))} --seed "
                         f"{int(synth.get('seed', 0))} --out {q(self.data_root)}")
        for step in self.selected():
            if step.kind in ("train", "sweep"):
                points = [(step.id, {})] if step.kind == "train" else self.points(step)
                spec = step.spec if step.kind == "train" else step.spec["sweep"]
                for pid, values in points:
                    config = self.train_config(pid, spec, values)
                    overrides = {"data.root": self.data_root, **_flatten("", spec.get("set") or {}), **values,
                                 "out_dir": config.out_dir}
                    overrides.pop("teachers", None)
                    if config.init_from:
                        overrides["init_from"] = config.init_from
                    if config.teachers:
                        overrides["teachers"] = list(config.teachers)
                    lines.append(" ".join(["soundsift", "train", "--config", q(str(spec["train"])),
                                           *(q(f"{k}={yaml_value(v)}") for k, v in overrides.items()),
                                           *(q(o) for o in self.overrides)]))
                continue
            spec = step.spec[step.kind]
            common = ["--model", q(self.model_ref(spec["model"]))] if spec.get("model") else []
            common += ["--data-root", q(self.data_root), "--format", q(spec.get("format", self.recipe.data_format))]
            if step.kind == "teachers":
                extra = []
                if "estimator" in spec:
                    extra += ["--estimator", q(spec["estimator"])]
                if spec.get("teachers"):
                    extra += ["--teachers", *(q(str(self.teacher_path(t))) for t in refs(spec["teachers"]))]
                if spec.get("weights") is not None:
                    extra += ["--weights", *(q(str(w)) for w in spec["weights"])]
                if "text_model" in spec:
                    extra += ["--text-model", q(self.model_ref(spec["text_model"]))]
                lines.append(" ".join(["soundsift", "teachers", *extra, *common, "--split",
                                       q(spec.get("split", "development")), "--out", q(str(self.teacher_path(step.id)))]))
            else:
                lines.append(" ".join(["soundsift", "-q", "evaluate", *common, "--split",
                                       q(spec.get("split", "evaluation")), ">", q(str(self.out / f"{step.id}.json"))]))
        return lines

    def collect_command(self) -> str:
        """The command that, after the printed steps ran, adopts their outputs and writes the results."""
        q = shlex.quote
        return " ".join(["soundsift", "reproduce", q(str(self.recipe.path)), "--data-root", q(self.data_root),
                         "--out", q(str(self.out)), *(f"--include {q(i)}" for i in sorted(self.include)),
                         *(q(o) for o in self.overrides)])

    def write_results(self) -> dict[str, Any]:
        """``results.json``, ``.md``, ``.csv`` and ``.tex`` from the steps' results (training.results)."""
        return write_results(self)

def check_train_configs(recipe: Recipe) -> None:
    """Every train config a recipe names exists (before anything runs)."""
    for step in recipe.steps.values():
        spec = step.spec.get("sweep", step.spec) if step.kind in ("train", "sweep") else None
        if spec is not None:
            resolve_config_path(spec["train"])


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
