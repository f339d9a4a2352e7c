"""A recipe (``recipes/*.yaml``) read once into typed, frozen records: its steps in dependency order.

A recipe lists steps; each is one of

- ``train: CONFIG`` (+ ``set: {key: value}``, ``init_from: STEP``, ``teachers: [STEP, ...]``): one
  training run into ``{out}/{id}`` (:class:`TrainSpec`);
- ``teachers: {model: STEP, split: S}``: the model's embeddings of a split, ``{out}/teachers/{id}.safetensors``;
  with ``estimator: NAME`` (``teachers: [STEP, ...]``, ``weights``, ``text_model``; ``model`` may also be a
  published name such as ``zero-shot``) any correspondence estimator's targets (:class:`TeachersSpec`);
- ``evaluate: {model: STEP, split: S}``: metrics of a model, ``{out}/{id}.json`` (:class:`EvaluateSpec`);
- ``sweep: {train: CONFIG, grid: {key: [values]}, ...}``: a train step per grid point, the best on
  validation mAP@10 selected, the grid reported (:class:`SweepSpec`);
- ``moments: {baseline: window|random|learned, ...}``: a moment baseline's predictions on a split of a
  moment benchmark and their metrics (:class:`MomentsSpec`; a recipe with ``task: moments``);
- ``train_moments: {model, seed, distill_weight, ...}``: the learned moment model (:class:`TrainMomentsSpec`).

A recipe may also name ``synth: {preset, seed}`` (:class:`SynthSpec`) and ``measure: {batch_size, tau,
rounds, seed}`` (:class:`MeasureSpec`). Values keep the types YAML gave them (no coercion): a step's
hash is taken over ``to_dict()``, the settings exactly as written, so recorded runs keep their hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from soundsift.errors import ConfigError
from soundsift.names import TEST_SPLIT, TRAIN_SPLIT

KINDS = ("train", "teachers", "evaluate", "sweep", "moments", "train_moments")
MOMENT_KINDS = ("moments", "train_moments")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
#: Step keys that are not the step's settings (not hashed).
STEP_KEYS = ("id", "optional", "expected", "row")
Refs = str | list[str]  # one step id or a list of them
Real = int | float  # a number as written (an int stays an int: it is hashed as written)


def refs(value: Refs | None) -> list[str]:
    """A recipe's reference to steps, one id or a list of them, as a list."""
    return [value] if isinstance(value, str) else list(value or [])


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{"loss": {"loss_weight": 1}}`` -> ``{"loss.loss_weight": 1}`` (a mapping value sets several keys)."""
    if isinstance(value, dict) and not prefix.endswith("_encoder"):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


class Spec(BaseModel):
    """A frozen record of recipe settings: unknown keys and values of the wrong type are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the recipe wrote them (only the keys it gave)."""
        return self.model_dump(exclude_unset=True, by_alias=True)


class TrainSpec(Spec):
    """``train: CONFIG`` with ``set`` (config overrides), ``init_from`` and ``teachers`` (step ids)."""

    train: str
    settings: dict[str, Any] | None = Field(None, alias="set")
    init_from: str | None = None
    teachers: Refs | None = None

    def uses(self) -> list[str]:
        return refs(self.init_from) + refs(self.teachers)

    def teacher_steps(self) -> list[str]:
        """The teachers steps the run trains on: ``teachers``, else a ``set: {teachers: ...}``."""
        if "teachers" in self.model_fields_set:
            return refs(self.teachers)
        return refs((self.settings or {}).get("teachers"))


class SweepSpec(TrainSpec):
    """``sweep: {train: CONFIG, grid: {key: [values]}, ...}``: one train run per grid point."""

    grid: dict[str, list[Any]] | None = None

    def uses(self) -> list[str]:
        listed = [t for values in (self.grid or {}).values() for value in values if isinstance(value, list)
                  for t in value if isinstance(t, str)]  # e.g. a grid over teachers
        return super().uses() + listed


class ModelStepSpec(Spec):
    """What a teachers and an evaluate step share: the model, and how the split is read."""

    model: str | None = None
    split: str
    format: str | None = None  # default: the recipe's data_format
    max_seconds: Real | None = None
    batch_size: int = 32

    def uses(self) -> list[str]:
        return refs(self.model)


class TeachersSpec(ModelStepSpec):
    """``teachers: {model: STEP, split: S}``, or an estimator's targets (``estimator``, ``teachers``,
    ``weights``, ``text_model``)."""

    split: str = TRAIN_SPLIT
    half: bool = False
    estimator: str | None = None
    teachers: Refs | None = None
    weights: list[Real] | None = None
    text_model: str | None = None

    @property
    def estimates(self) -> bool:
        """Whether the step writes an estimator's targets (an estimator key is given)."""
        return bool({"estimator", "teachers", "weights", "text_model"} & self.model_fields_set)

    def uses(self) -> list[str]:
        return super().uses() + refs(self.teachers)


class EvaluateSpec(ModelStepSpec):
    """``evaluate: {model: STEP, split: S}``: a model's metrics."""

    model: str
    split: str = TEST_SPLIT


class MomentsSpec(Spec):
    """``moments: {baseline, model, moment_model: STEP, split, window, hop}``: ``evaluate --task
    moments`` of a baseline (window: a sliding window over ``model``; random; learned: ``moment_model``)."""

    baseline: str
    model: str | None = None
    moment_model: str | None = None
    split: str = TEST_SPLIT
    window: Real | None = None
    hop: Real | None = None
    batch_size: int = 32
    skip_invalid: bool = False

    def uses(self) -> list[str]:
        return refs(self.moment_model)


class TrainMomentsSpec(Spec):
    """``train_moments: {model, window, hop, teachers, ...}`` with the ``MomentTrainOptions`` fields it sets."""

    model: str = "zero-shot"
    window: Real | None = None
    hop: Real | None = None
    teachers: list[str] | None = None
    steps: int | None = None
    hidden: int | None = None
    lr: Real | None = None
    seed: int | None = None
    loss_weight: Real | None = None
    distill_weight: Real | None = None
    tau: Real | None = None
    batch_size: int = 32

    def uses(self) -> list[str]:
        return []


class SynthSpec(Spec):
    """``synth:``: without a data root, the generated benchmark is written to ``{out}/data`` first."""

    preset: str = "small"
    seed: int = 0


class MeasureSpec(Spec):
    """``measure:``: how each teachers step's estimate is scored against the benchmark's ground truth."""

    batch_size: int = 64
    tau: Real = 0.05
    rounds: int = 10
    seed: int = 0


StepSpec = TrainSpec | SweepSpec | TeachersSpec | EvaluateSpec | MomentsSpec | TrainMomentsSpec
SPECS: dict[str, type[Spec]] = {"train": TrainSpec, "sweep": SweepSpec, "teachers": TeachersSpec,
                                "evaluate": EvaluateSpec, "moments": MomentsSpec, "train_moments": TrainMomentsSpec}


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    spec: StepSpec  # the record of its kind
    needs: list[str]
    optional: str | None = None
    expected: dict[str, dict[str, float]] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    title: str
    steps: dict[str, Step]  # in dependency order
    data_root: str | None
    data_format: str
    synth: SynthSpec | None = None
    measure: MeasureSpec | None = None
    task: str = "retrieval"  # or "moments": a moment benchmark (synth --moments; Clotho-Moment, CASTELLA)
    reference: str | None = None  # moments: the step every other is compared with (paired intervals)


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


def parse(cls: type[Spec], raw: Any, where: str) -> Any:
    """``raw`` as a ``cls`` record; a bad key or value is one ConfigError naming ``where`` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r}")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = sorted(f.alias or name for name, f in cls.model_fields.items())
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(known)}") from None
        if err["type"] == "missing":
            raise ConfigError(f"{where}: needs {key!r}") from None
        raise ConfigError(f"{where}: {key}: {err['msg'].lower()}, got {err.get('input')!r}") from None


def read_step(raw: Any, index: int, path: Path) -> tuple[str, str, Any]:
    """A step's id, kind and settings record."""
    # ``teachers`` names the kind when it is a mapping ({model, split}); a list is a train step's teachers
    kinds = [k for k in KINDS if k in raw and (k != "teachers" or isinstance(raw[k], dict))] \
        if isinstance(raw, dict) else []
    if len(kinds) != 1 or not raw.get("id"):
        raise ConfigError(f"{path}: step {index + 1} needs an 'id' and exactly one of {', '.join(KINDS)}")
    kind, sid = kinds[0], str(raw["id"])
    where = f"{path}: step {sid!r}"
    settings = {k: v for k, v in raw.items() if k not in STEP_KEYS}
    if kind == "train":
        return sid, kind, parse(TrainSpec, settings, where)
    if len(settings) > 1:
        raise ConfigError(f"{where}: unknown keys {sorted(k for k in settings if k != kind)} beside {kind!r}")
    spec = parse(SPECS[kind], settings[kind], f"{where}: {kind}")
    if kind == "teachers" and spec.model is None and not spec.estimates:
        raise ConfigError(f"{where}: teachers needs a 'model' (or an 'estimator')")
    if kind == "sweep" and not spec.grid:
        raise ConfigError(f"{path}: sweep {sid!r} has an empty grid")
    return sid, kind, spec


def step_needs(kind: str, spec: Any, ids: set[str]) -> list[str]:
    """The steps a step uses (``ids``: the recipe's step ids), without published models it names."""
    needs = spec.uses()
    if kind == "teachers":
        if spec.model is not None and spec.model not in ids and _published(spec.model):
            needs.remove(spec.model)  # a published model (zero-shot), not a step
        if spec.text_model in ids:
            needs.append(spec.text_model)  # caption-similarity with a trained model's text tower
    return list(dict.fromkeys(needs))


def load_recipe(name: str | Path) -> Recipe:
    """Read and check a recipe; steps come back in an order where every step follows what it needs."""
    path = resolve_recipe_path(name)
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise ConfigError(f"{path}: a recipe is a mapping with a 'steps' list")
    parsed: dict[str, tuple[str, Any, dict[str, Any]]] = {}
    for i, raw in enumerate(doc["steps"]):
        sid, kind, spec = read_step(raw, i, path)
        if sid in parsed:
            raise ConfigError(f"{path}: step id {sid!r} appears twice")
        parsed[sid] = kind, spec, raw
    steps = {sid: Step(sid, kind, spec, step_needs(kind, spec, set(parsed)), raw.get("optional"),
                       raw.get("expected") or {}, raw.get("row") or {}) for sid, (kind, spec, raw) in parsed.items()}
    for step in steps.values():
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
    synth, measure = (parse(cls, doc[key], f"{path}: '{key}'") if doc.get(key) is not None else None
                      for key, cls in (("synth", SynthSpec), ("measure", MeasureSpec)))
    task, reference = str(doc.get("task", "retrieval")), doc.get("reference")
    if task not in ("retrieval", "moments"):
        raise ConfigError(f"{path}: task {task!r}: use retrieval or moments")
    kinds = {s.kind for s in steps.values()}
    if (task == "moments") != bool(kinds & set(MOMENT_KINDS)) or (task == "moments" and kinds - set(MOMENT_KINDS)):
        raise ConfigError(f"{path}: a recipe with task: moments has only moments and train_moments steps, "
                          "and only it has them")
    for step in steps.values():
        if isinstance(step.spec, MomentsSpec):
            _check_moments_step(path, step.id, step.spec, steps)
    if reference is not None and (reference not in steps or steps[reference].kind != "moments"):
        raise ConfigError(f"{path}: reference {reference!r} is not a moments step of the recipe")
    return Recipe(str(doc.get("name", path.stem)), path, str(doc.get("title", "")),
                  {sid: steps[sid] for sid in order}, doc.get("data_root"), str(doc.get("data_format", "clotho")),
                  synth if doc.get("synth") else None, measure, task, None if reference is None else str(reference))


def _check_moments_step(path: Path, sid: str, spec: MomentsSpec, steps: dict[str, Step]) -> None:
    where = f"{path}: step {sid!r}: moments"
    if spec.baseline not in ("window", "random", "learned"):
        raise ConfigError(f"{where}: baseline {spec.baseline!r}: use window, random or learned")
    if spec.baseline == "window" and not spec.model:
        raise ConfigError(f"{where}: the window baseline needs a 'model'")
    if spec.baseline == "learned" and (spec.moment_model is None or steps[spec.moment_model].kind != "train_moments"):
        raise ConfigError(f"{where}: the learned baseline needs 'moment_model', a train_moments step")


def _published(name: str) -> bool:
    from soundsift.checkpoints.load import PUBLISHED

    return name in PUBLISHED
