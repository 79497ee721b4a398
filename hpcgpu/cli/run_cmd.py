"""`hpcgpu run local`: run a job on this machine."""

from __future__ import annotations

import os
import sys

import click

from hpcgpu.contract.errors import UserError

from hpcgpu.cli.common import (exit_after_agent, load_with_overrides, materialize_run, parse_gpus,
                               remember_launch_dir, reserve_run_dir, return_to_launch_dir, run_location, spec_option)


@click.group()
def run() -> None:
    """Run a job on this machine."""


@run.command("local", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@spec_option
@click.option("--gpus", default=None, metavar="N|all", help="GPUs to use (one rank each); 'all' = every visible GPU.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="Run N ranks on CPUs (gloo) instead of GPUs.")
@click.option("--name", default=None, help="Run name (prefix of the run directory).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=None, help="Restart all ranks up to N times after a failure.")
@click.option("--container", default=None, metavar="IMAGE", help="Run the node agent inside this image (runtime from the spec, default podman locally).")
@click.option("--resume", "resume_run", default=None, metavar="RUN",
              help="Continue RUN (id, id prefix or run dir) in its own run dir, from its newest valid checkpoint.")
@click.option("--dry-run", is_flag=True, help="Print the plan (command, environment, rank table) and start nothing.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS... | -- -m MODULE ARGS...]")
def run_local(spec_file, gpus, nproc, name, max_restarts, container, dry_run, command, resume_run=None) -> int:
    """Run the spec's job on this machine: one node agent, one rank per GPU (or --nproc CPU ranks).

    \b
    Examples:
      hpcgpu run local                       # ./hpcgpu.yaml, or the bundled demo
      hpcgpu run local --nproc 2             # 2 CPU ranks (gloo)
      hpcgpu run local --gpus 4 -f job.yaml
      hpcgpu run local --gpus all -- train.py --lr 3e-4   # any script, like torchrun
      hpcgpu run local --dry-run             # show what would run
      hpcgpu run local --resume demo-2026    # continue a stopped run where it left off

    Exit status: 0 done, 1 a rank failed, 2 bad input (nothing started),
    75 stopped cleanly on a signal after a checkpoint (rerun to resume).
    """
    from hpcgpu.backends import get_backend
    from hpcgpu.host.plan import describe_plan

    if resume_run:
        if any(v is not None for v in (spec_file, gpus, nproc, name, max_restarts, container)) or command:
            raise UserError("--resume continues a run with the spec it was started with; it takes no other options",
                            hint="start a new run instead to change the spec")
        return _resume(resume_run, dry_run)
    flags = {"name": name, "distributed.max_restarts": max_restarts}
    if nproc is not None:
        flags.update({"resources.gpus_per_node": 0, "resources.procs_per_node": nproc})
    elif gpus is not None:
        flags["resources.gpus_per_node"] = parse_gpus(gpus)
    spec, source = load_with_overrides(spec_file, flags, command)
    if container:
        from hpcgpu.host.spec import apply_overrides

        # dotted keys: the spec's runtime, binds and extra_args stay; without a container section
        # the runtime is podman (apptainer, the spec's default, is the Slurm-side choice)
        spec = apply_overrides(spec, {"container.image": container,
                                      "container.runtime": None if spec.container else "podman"})
    run_id, run_dir = run_location(spec)
    plan = _local_plan(spec, run_id, run_dir)
    if dry_run:
        click.echo(f"spec:     {source}")
        click.echo(describe_plan(plan), nl=False)
        return 0
    _check_container(spec, run_dir)
    plan = reserve_run_dir(lambda: _local_plan(spec, *run_location(spec)))
    materialize_run(plan, nodes=1)
    remember_launch_dir(plan.run_dir)
    _announce(plan, source)
    code = get_backend("local").launch(plan)
    _farewell(plan, code)
    exit_after_agent(code)


def _resume(ref: str, dry_run: bool) -> int:
    """Relaunch an existing run in its own run dir: the worker resumes from the newest valid checkpoint."""
    from pathlib import Path

    from hpcgpu.backends import get_backend
    from hpcgpu.host.plan import describe_plan
    from hpcgpu.host.runs import find_run, read_json, update_record
    from hpcgpu.host.spec import load_spec

    record = find_run(ref)
    if record.backend != "local":
        raise UserError(f"run {record.id} ran on {record.backend}", hint="Slurm jobs resume by requeue")
    spec, _ = load_spec(Path(record.run_dir) / "spec.yaml")
    return_to_launch_dir(record.run_dir)
    plan = _local_plan(spec, record.id, record.run_dir)
    if dry_run:
        click.echo(describe_plan(plan), nl=False)
        return 0
    _check_container(spec, record.run_dir)
    info = read_json(Path(record.run_dir) / "run.json") or {}
    update_record(Path(record.run_dir), pid=os.getpid(), restarts=info.get("restarts", 0) + 1)
    _announce(plan, f"{record.run_dir}/spec.yaml (resumed)")
    code = get_backend("local").launch(plan)
    _farewell(plan, code)
    exit_after_agent(code)


def _local_plan(spec, run_id: str, run_dir: str):
    """The plan for this machine; with a container, the prefix is built once the layout is known."""
    import dataclasses

    from hpcgpu.contract.gpus import count_visible_gpus
    from hpcgpu.host.plan import build_plan

    in_container = spec.container is not None
    plan = build_plan(spec, backend="local", run_id=run_id, run_dir=run_dir,
                      visible_gpus=count_visible_gpus(os.environ), user_env=os.environ,
                      python="python3" if in_container else sys.executable)
    if not in_container:
        return plan
    from hpcgpu.host.container import local_prefix  # torch-free

    prefix = local_prefix(spec, run_dir, env_names=tuple(plan.env), gpus=plan.layout.gpus > 0)
    return dataclasses.replace(plan, container_prefix=tuple(prefix))


def _check_container(spec, run_dir: str) -> None:
    """A missing runtime or image, or this run's container still running: say so before anything starts."""
    if spec.container is not None:
        from hpcgpu.host.container import check_runtime, local_container_name

        check_runtime(spec.container.runtime, spec.container.image, container_name=local_container_name(run_dir))


def _announce(plan, source: str) -> None:
    click.echo(f"hpcgpu: {plan.run_id}: {plan.world_size} rank(s) on {plan.layout.device}, spec {source}")
    click.echo(f"hpcgpu: run dir {plan.run_dir} (logs/, checkpoints/, tb/)")
    sys.stdout.flush()


def _farewell(plan, code: int) -> None:
    what = {0: "done", 75: f"stopped after a checkpoint; continue with: hpcgpu run local --resume {plan.run_id}"}.get(
        code, f"failed (exit {code})")
    ckpt = plan.env.get("HPCGPU_CKPT_DIR")
    click.echo(f"hpcgpu: {plan.run_id} {what}")
    click.echo(f"  logs:        {plan.run_dir}/logs/rank<N>.log  (hpcgpu logs {plan.run_id} --rank N)")
    click.echo(f"  checkpoints: {ckpt}")
    click.echo(f"  tensorboard: tensorboard --logdir {plan.run_dir}/tb")
