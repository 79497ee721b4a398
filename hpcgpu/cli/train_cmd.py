"""`hpcgpu train`: the node agent (the container's default command, and what every Slurm node runs)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory prepared by `run local` / `submit slurm`. Without it, a new run is "
                   "made here from ./hpcgpu.yaml (or the bundled demo): what `docker run IMAGE train` does.")
@click.option("-f", "--file", "spec_file", type=click.Path(dir_okay=False), default=None,
              help="Spec for a new run (only without --run-dir).")
def train(run_dir, spec_file) -> int:
    """Start this node's ranks and wait for them.

    Forwards SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the ranks, which checkpoint and stop.
    Exit status: 0 done, 1 a rank failed (named, with its traceback), 75 stopped cleanly (resumable).
    """
    if run_dir is None:
        return _train_here(spec_file)
    import os
    import time

    from hpcgpu.agent.node import run_node
    from hpcgpu.host.runs import write_json_atomic

    code = run_node(Path(run_dir).absolute())
    if os.environ.get("SLURM_NODEID", "0") == "0":
        # status after the scheduler forgot the job (and for local runs started in a container)
        write_json_atomic(Path(run_dir).absolute() / "result.json", {"exit_code": code, "ended": time.time()})
    from hpcgpu.cli.common import exit_after_agent

    exit_after_agent(code)


def _train_here(spec_file) -> int:
    """No run dir: plan a single-node run of the spec in the current directory and run it."""
    from hpcgpu.cli.run_cmd import run_local

    return run_local.callback(spec_file=spec_file, gpus=None, nproc=None, name=None, max_restarts=None,
                              container=None, dry_run=False, command=(), resume_run=None)
