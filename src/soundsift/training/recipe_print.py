"""``reproduce --print``: a recipe's selected steps as the plain shell commands that do the same work
(``soundsift synth``, ``train``, ``teachers``, ``evaluate``), and the command that collects their results."""

from __future__ import annotations

import shlex
from typing import Any

from soundsift.training.recipe_spec import SynthSpec, TeachersSpec, flatten, refs
from soundsift.training.results import yaml_value


def commands(runner: Any) -> list[str]:
    """The selected steps as plain shell commands, one per step (a sweep: one per grid point), in
    dependency order; ``collect_command`` then writes the results."""
    lines, q = [], shlex.quote
    moments = runner.recipe.task == "moments"
    if runner.generates_data():
        synth = runner.recipe.synth or SynthSpec()
        lines.append(f"soundsift synth {'--moments ' if moments else ''}--preset {q(synth.preset)} --seed {synth.seed} "
                     f"--out {q(runner.data_root)}")
    if moments:
        from soundsift.training.moment_recipe import commands as moment_commands

        return lines + moment_commands(runner)
    for step in runner.selected():
        spec = step.spec
        if step.kind in ("train", "sweep"):
            points = [(step.id, {})] if step.kind == "train" else runner.points(step)
            for pid, values in points:
                config = runner.train_config(pid, spec, values)
                overrides = {"data.root": runner.data_root, **flatten("", spec.settings or {}), **values,
                             "out_dir": config.out_dir}
                overrides.pop("teachers", None)
                if config.init_from:
                    overrides["init_from"] = config.init_from
                if config.teachers:
                    overrides["teachers"] = list(config.teachers)
                lines.append(" ".join(["soundsift", "train", "--config", q(spec.train),
                                       *(q(f"{k}={yaml_value(v)}") for k, v in overrides.items()),
                                       *(q(o) for o in runner.overrides)]))
            continue
        common = ["--model", q(runner.model_ref(spec.model))] if spec.model else []
        common += ["--data-root", q(runner.data_root), "--format", q(runner.data_format(spec))]
        if isinstance(spec, TeachersSpec):
            extra = []
            if spec.estimator is not None:
                extra += ["--estimator", q(spec.estimator)]
            if spec.teachers:
                extra += ["--teachers", *(q(str(runner.teacher_path(t))) for t in refs(spec.teachers))]
            if spec.weights is not None:
                extra += ["--weights", *(q(str(w)) for w in spec.weights)]
            if spec.text_model is not None:
                extra += ["--text-model", q(runner.model_ref(spec.text_model))]
            lines.append(" ".join(["soundsift", "teachers", *extra, *common, "--split",
                                   q(spec.split), "--out", q(str(runner.teacher_path(step.id)))]))
        else:
            lines.append(" ".join(["soundsift", "-q", "evaluate", *common, "--split",
                                   q(spec.split), ">", q(str(runner.out / f"{step.id}.json"))]))
    return lines


def collect_command(runner: Any) -> str:
    """The command that, after the printed steps ran, adopts their outputs and writes the results."""
    q = shlex.quote
    return " ".join(["soundsift", "reproduce", q(str(runner.recipe.path)), "--data-root", q(runner.data_root),
                     "--out", q(str(runner.out)), *(f"--include {q(i)}" for i in sorted(runner.include)),
                     *(q(o) for o in runner.overrides)])
