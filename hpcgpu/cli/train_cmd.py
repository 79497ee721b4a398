"""`hpcgpu train`: the node agent (the container's default command, and what every Slurm node runs)."""

from __future__ import annotations

import click


@click.command()
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), default=None,
              help="plan.json written by `run local` / `submit slurm`: run this node's part of it.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="A run directory holding plan.json (the same as --plan RUN_DIR/plan.json).")
@click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False), default=None,
              help="Without --plan: the spec of a new single-node run made here (default ./hpcgpu.yaml, "
                   "else the bundled demo). This is what `docker run IMAGE train` does.")
def train(plan_file, run_dir, spec_file) -> int:
    """Start this node's ranks and wait for them.

    Forwards SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the ranks, which checkpoint and stop.
    Exit status: 0 done, 1 a rank failed (named, with its traceback), 75 stopped cleanly (resumable).
    """
    from hpcgpu.cli.common import exit_after_agent
    from hpcgpu.contract.errors import UserError

    if plan_file and run_dir:
        raise UserError("give --plan or --run-dir, not both")
    if plan_file is None and run_dir is None:
        return _train_here(spec_file)
    if spec_file:
        raise UserError("-f makes a new run; a planned run (--plan/--run-dir) runs the spec in its plan")
    from hpcgpu.agent.node import run_node
    from hpcgpu.contract.plan import load_plan

    exit_after_agent(run_node(load_plan(plan_file or run_dir)))


def _train_here(spec_file) -> int:
    """No plan: plan a single-node run of the spec in the current directory and run it."""
    from hpcgpu.cli.run_cmd import _announce, finish
    from hpcgpu.host import launch

    spec, source = launch.load_with_overrides(spec_file, {})
    finish(launch.start(spec, "local", announce=lambda plan: _announce(plan, source)))
