"""``reproduce --launcher slurm``: each step of a recipe becomes a SLURM job (through submitit) that
waits for the jobs of the steps it needs, so a table's independent steps run in parallel on a cluster.

A job runs ``Runner(..., only=[step]).run()``: the steps it needs are already recorded as done and are
skipped, so a job does exactly its own step; a last job writes ``results.json`` / ``results.md``.
submitit's local executor (``local=True``) runs the same jobs as local processes (tests, one machine);
it knows no dependencies, so there each step waits for the jobs it needs before it is submitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soundsift.errors import require


def run_steps(recipe: str, out: str, data_root: str, include: list[str], overrides: list[str],
              only: list[str], collect: bool = False) -> dict[str, Any]:
    """What one job does: the given steps (and nothing else: what they need is done), or the results."""
    from soundsift.training.recipe import Runner, load_recipe

    runner = Runner(load_recipe(recipe), out, data_root, include=include, only=only, progress=False,
                    overrides=overrides)
    runner.run()
    return runner.write_results() if collect else {sid: r for sid, r in runner.results.items() if sid in only}


def launch_slurm(runner, folder: str | Path, local: bool = False, parameters: dict[str, Any] | None = None):
    """Submit one job per selected step (dependencies: ``afterok`` on SLURM) and a final results job;
    returns the results job. ``parameters`` go to ``executor.update_parameters`` (partition, GPUs...)."""
    submitit = require("submitit", "the optional extra: pip install 'soundsift[slurm]'", "--launcher slurm")
    executor = submitit.LocalExecutor(folder=str(folder)) if local else submitit.AutoExecutor(folder=str(folder))
    if parameters:
        executor.update_parameters(**parameters)
    common = (str(runner.recipe.path), str(runner.out), runner.data_root, sorted(runner.include), runner.overrides)
    jobs: dict[str, Any] = {}

    def submit(needs: list[Any], only: list[str], collect: bool = False):
        if local:
            for job in needs:
                job.result()  # raises if a step it needs failed
        else:
            extra = {"dependency": "afterok:" + ":".join(str(j.job_id) for j in needs)} if needs else {}
            executor.update_parameters(slurm_additional_parameters=extra)
        return executor.submit(run_steps, *common, only, collect)

    for step in runner.selected():
        jobs[step.id] = submit([jobs[n] for n in step.needs if n in jobs], [step.id])
        runner.log(f"reproduce: {step.id}: submitted as job {jobs[step.id].job_id}")
    final = submit(list(jobs.values()), [], collect=True)
    runner.log(f"reproduce: results job {final.job_id}; logs in {folder}")
    return final
