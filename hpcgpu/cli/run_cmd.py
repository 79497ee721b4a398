"""`hpcgpu run local`: run a job on this machine."""

from __future__ import annotations

import shlex
import sys

import click

from hpcgpu.contract.errors import UserError

from hpcgpu.cli.common import (allow_restart_option, check_allow_restart_flag, check_json_flag, console_option,
                               exit_after_agent, parse_gpus, print_plan, refuse_options_with_resume, set_option, spec_option,
                               with_dry_run_options, with_set_items)
from hpcgpu.cli.sweep_cmd import no_sweep_option, parallel_option, sweep_option


@click.group()
def run() -> None:
    """Run a job on this machine."""


@run.command("local", context_settings={"allow_interspersed_args": False})
@spec_option
@set_option
@click.option("--gpus", default=None, metavar="N|all", help="GPUs to use (one rank each); 'all' = every visible GPU.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="Run N ranks on CPUs (gloo) instead of GPUs.")
@click.option("--name", default=None, help="Run name (prefix of the run directory).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=None, help="Restart all ranks up to N times after a failure.")
@click.option("--container", default=None, metavar="IMAGE", help="Run the node agent inside this image (runtime from the spec, default podman locally).")
@click.option("--resume", "resume_run", default=None, metavar="RUN",
              help="Continue RUN (id, id prefix or run dir) in its own run dir, from its newest valid checkpoint "
                   "(refused when every checkpoint is broken: see --allow-restart-from-zero).")
@console_option
@allow_restart_option
@click.option("--nnodes", default=None, metavar="N",
              help="Several nodes without a scheduler: this run spans N nodes, each started by hand with this "
                   "command (same spec, --nnodes, --rdzv-endpoint and --rdzv-id; its own --node-rank). "
                   "MIN:MAX (elastic membership) is refused: the plan fixes the world size.")
@click.option("--node-rank", type=int, default=None, metavar="R",
              help="With --nnodes: this node's index, 0 on the head (the node at --rdzv-endpoint), 1..N-1 elsewhere. "
                   "Ranks are numbered by it: node R runs ranks R*nproc ... (R+1)*nproc-1.")
@click.option("--rdzv-endpoint", default=None, metavar="HOST:PORT",
              help="With --nnodes: node 0's address (as every node can reach it) and a free TCP port there, where "
                   "the nodes meet. Each node's ranks then talk over the interface that routes to it.")
@click.option("--rdzv-id", default=None, metavar="ID",
              help="With --nnodes: the run's name on every node (run id <name>-<ID>; run dir runs/<name>-<ID> on "
                   "node 0, runs/<name>-<ID>-node<R> on node R). A new ID per run.")
@sweep_option
@parallel_option
@click.option("--gpus-per-task", type=click.IntRange(min=1), default=None, metavar="N",
              help="With a sweep: GPUs per task (default 1); tasks are queued over disjoint GPU sets.")
@no_sweep_option
@with_dry_run_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS... | -- -m MODULE ARGS...]")
def run_local(spec_file, set_items, gpus, nproc, name, max_restarts, container, dry_run, command, resume_run=None,
              as_json=False, allow_restart=False, console=None, nnodes=None, node_rank=None, rdzv_endpoint=None,
              rdzv_id=None, sweep_items=(), parallel=None, gpus_per_task=None, no_sweep=False) -> int:
    """Run the spec's job on this machine: one node agent, one rank per GPU (or --nproc CPU ranks);
    or this machine's part of a run over several nodes (--nnodes), like torchrun on each node.

    \b
    Examples:
      hpcgpu run local                       # ./hpcgpu.yaml, or the bundled demo
      hpcgpu run local --nproc 2             # 2 CPU ranks (gloo)
      hpcgpu run local --nproc 2 --console all   # every rank's lines, as [rank N] ...
      hpcgpu run local --gpus 4 -f job.yaml
      hpcgpu run local --gpus all -- train.py --lr 3e-4   # any script, like torchrun
      hpcgpu run local --gpus 2 -- -m mypkg.train --lr 3e-4
      hpcgpu run local --gpus 2 -- python -u train.py      # -u/-B/-O/-W/-X: as PYTHON* variables
      hpcgpu run local --dry-run             # show what would run
      hpcgpu run local --dry-run --json      # ... as the plan.json the run would execute
      hpcgpu run local --resume demo-2026    # continue a stopped run where it left off

    \b
    Sweeps (one run per combination, queued over GPU sets or CPU slots; docs/sweeps.md):
      hpcgpu run local --sweep train.lr=1e-3,3e-4 --sweep train.seed=1,2   # 4 tasks, 1 GPU each
      hpcgpu run local --nproc 1 --parallel 2 --sweep train.seed=1,2,3,4   # CPU: 2 at a time
      hpcgpu run local --resume SWEEP        # run the tasks that did not finish

    \b
    Two nodes without a scheduler (run on each; the head, node 0, at 10.0.0.1):
      hpcgpu run local --gpus 8 --nnodes 2 --node-rank 0 --rdzv-endpoint 10.0.0.1:29400 --rdzv-id exp1
      hpcgpu run local --gpus 8 --nnodes 2 --node-rank 1 --rdzv-endpoint 10.0.0.1:29400 --rdzv-id exp1
      ... --dry-run                          # this node's part: its ranks, the interface it would use
      hpcgpu run local --resume runs/demo-exp1       # on node 0 (node R: runs/demo-exp1-nodeR)
    Rank 0 (node 0) writes checkpoints into node 0's run dir; resuming needs them where every node
    can read them (a shared file system, or checkpoint.dir on one). See docs/multinode.md.

    Exit status: 0 done, 1 a rank failed, 2 bad input (nothing started; also --resume of a run
    whose checkpoints are all broken, without --allow-restart-from-zero),
    75 stopped cleanly on a signal after a checkpoint (rerun to resume).
    """
    from hpcgpu.backends.local.multinode import multinode_options, parse_nnodes
    from hpcgpu.host import launch

    multi = multinode_options(parse_nnodes(nnodes), node_rank, rdzv_endpoint, rdzv_id)
    check_json_flag(as_json, dry_run)
    check_allow_restart_flag(allow_restart, resume_run)
    if resume_run:
        refuse_options_with_resume()
        from hpcgpu.cli.sweep_cmd import find_sweep_for, resume_local_sweep

        swept = find_sweep_for(resume_run, "local")
        if swept is not None:
            return resume_local_sweep(swept, dry_run)
        if dry_run:
            from hpcgpu.backends import get_backend

            _, plan = launch.resume_plan(resume_run, "local", allow_restart)
            return print_plan(plan, get_backend("local"), f"{plan.run_dir}/spec.yaml (resumed)", as_json)
        finish(launch.resume(resume_run, "local", announce=lambda plan: _announce(plan, f"{plan.run_dir}/spec.yaml (resumed)"),
                             allow_restart=allow_restart))
    flags = {"name": name, "distributed.max_restarts": max_restarts, "logging.console": console}
    if multi is not None:
        flags["resources.nodes"] = multi.nnodes
    if nproc is not None:
        flags.update({"resources.gpus_per_node": 0, "resources.procs_per_node": nproc})
    elif gpus is not None:
        flags["resources.gpus_per_node"] = parse_gpus(gpus)
    if gpus_per_task is not None:
        if gpus is not None or nproc is not None:
            raise UserError("--gpus-per-task sizes each task of a sweep; it replaces --gpus/--nproc",
                            hint="give --gpus-per-task N with --sweep, or --gpus N for one run")
        flags["resources.gpus_per_node"] = gpus_per_task
    spec, source = launch.load_with_overrides(spec_file, with_set_items(flags, set_items), command,
                                              (container, "podman"))
    from hpcgpu.cli.sweep_cmd import refuse_with_sweep, run_local_sweep, sweep_request

    request = sweep_request(spec, sweep_items, parallel, no_sweep)
    if request is not None:
        refuse_with_sweep(json=as_json, nnodes=multi is not None)
        return run_local_sweep(request, dry_run)
    if gpus_per_task is not None:
        raise UserError("--gpus-per-task applies to a sweep, and there is none", hint="for one run: --gpus N")
    # the local backend plans this node's part (node rank, endpoint) from multi.environ()
    run_name = launch.RunName(multi.run_id(spec.name), multi.dir_name(spec.name), multi.environ()) if multi else None
    if dry_run:
        from hpcgpu.backends import get_backend

        return print_plan(launch.plan_new(spec, "local", name=run_name), get_backend("local"), source, as_json)
    finish(launch.start(spec, "local", announce=lambda plan: _announce(plan, source), name=run_name))


def outcome_line(code: int, resume: str) -> str:
    """How a run ended, in words, from the node agent's exit status (contract.states' map)."""
    import signal

    from hpcgpu.contract.states import RunState, state_from_exit

    state = state_from_exit(code)
    if state is RunState.DONE:
        return "done"
    if state is RunState.STOPPED:
        return f"stopped after a checkpoint; continue with: {resume}"
    if state is RunState.HUNG:
        return (f"hung: no rank made progress for watchdog.stall_s; the hang report (hang-*.md in the run dir) "
                f"names the rank behind; continue from the last checkpoint with: {resume}")
    if state is RunState.INTERRUPTED:
        return (f"interrupted by {signal.Signals(code - 128).name} before its ranks could checkpoint; "
                f"continue from the previous checkpoint with: {resume}")
    return f"failed (exit {code})"


def resume_command(run_id: str, run_dir: str, environ=None, root: str = "/") -> str:
    """How to continue a stopped local run, as a command for where the user started it.

    On a host: `hpcgpu run local --resume ID`. In the hpcgpu image (`docker run ... IMAGE train`,
    HPCGPU_IN_IMAGE=1) the container is gone once the run stops, and with it the run index in its
    home: a new container of the image continues the run, named by its directory, which the same
    mount brings back; `hpcgpu` is the image's entrypoint, so its arguments follow the image. The
    engine is docker (/.dockerenv) or podman (/run/.containerenv); root is for tests."""
    import os
    import shlex

    from hpcgpu.contract.envnames import IN_IMAGE

    environ = os.environ if environ is None else environ
    if environ.get(IN_IMAGE) == "1":
        for marker, engine in (("run/.containerenv", "podman"), (".dockerenv", "docker")):
            if os.path.exists(os.path.join(root, marker)):
                return f"{engine} run <the same options and image> run local --resume {shlex.quote(run_dir)}"
    return f"hpcgpu run local --resume {run_id}"


def finish(launched) -> None:
    """Say how the run ended and where everything is; exit with the node agent's status."""
    plan, code = launched.plan, launched.handle.exit_code
    # several nodes share the run id: each resumes its own run dir (and reruns this on every node)
    how = resume_command(plan.run_id, plan.run_dir) if plan.nodes == 1 else \
        f"hpcgpu run local --resume {shlex.quote(plan.run_dir)}"
    click.echo(f"hpcgpu: {plan.run_id} {outcome_line(code, how)}")
    click.echo(f"  logs:        {plan.run_dir}/logs/rank<N>.log  (hpcgpu logs {plan.run_id} --rank N | --all | --dedup)")
    click.echo(f"  checkpoints: {plan.ckpt_dir}")
    click.echo(f"  tensorboard: tensorboard --logdir {plan.run_dir}/tb")
    exit_after_agent(code)


def _announce(plan, source: str) -> None:
    click.echo(f"hpcgpu: {plan.run_id}: {plan.world_size} rank(s) on {plan.device_type}, spec {source}")
    if plan.nodes > 1:
        click.echo(f"hpcgpu: node {plan.request['node_rank']} of {plan.nodes}, meeting the others at "
                   f"{plan.request['rdzv_endpoint']}")
    click.echo(f"hpcgpu: run dir {plan.run_dir} (logs/, checkpoints/, tb/)")
    sys.stdout.flush()
