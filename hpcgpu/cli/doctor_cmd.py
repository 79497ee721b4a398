"""`hpcgpu doctor`: check this machine for what breaks multi-GPU training, before it does."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from hpcgpu.contract.errors import UserError


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (for machines).")
@click.option("--report", is_flag=True, help="Print a markdown block to paste into a GitHub issue.")
@click.option("--no-functional", is_flag=True, help="Skip the real all-reduce test (saves ~5-30 s).")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Ranks for the all-reduce test [default: every visible GPU, else 2 CPU ranks].")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="Directory whose write access and free space are checked.")
@click.option("--slurm", is_flag=True,
              help="Also run the all-reduce across Slurm nodes (srun --ntasks-per-node=1; 2 nodes unless --nodes).")
@click.option("--nodes", "slurm_nodes", type=click.IntRange(min=2, max=512), default=2, show_default=True,
              help="With --slurm: nodes to test. From 3 on, pairs of them name a node that fails or is far "
                   "slower than the others (a preflight before a big job: exclude what it names).")
@click.option("--timeout", type=click.FloatRange(min=1), default=180.0, show_default=True,
              help="Seconds before an all-reduce test is declared hung.")
def doctor(as_json: bool, report: bool, no_functional: bool, nproc: int | None,
           checkpoint_dir: Path, slurm: bool, slurm_nodes: int, timeout: float) -> int:
    """Check GPUs, drivers, torch/CUDA/NCCL, Slurm, containers and the network, then run a real
    all-reduce (NCCL on GPUs, gloo on CPU) and report its bus bandwidth.

    \b
    Examples:
      hpcgpu doctor                    # table; exit status 1 if anything failed
      hpcgpu doctor --no-functional    # static checks only (no torch processes)
      hpcgpu doctor --report           # markdown for a bug report
      hpcgpu doctor --slurm            # + all-reduce across 2 nodes of the cluster
      hpcgpu doctor --slurm --nodes 8 --no-functional   # preflight: name a bad node among 8

    Exit status: 0 nothing failed, 1 at least one check failed, 2 bad flags.
    See docs/doctor.md for every check, what a failure means and how to fix it.
    """
    if as_json and report:
        raise UserError("--json and --report are exclusive", hint="pick one output format")
    if slurm_nodes != 2 and not slurm:
        raise UserError("--nodes applies to the Slurm all-reduce", hint="add --slurm")
    from hpcgpu import __version__
    from hpcgpu.doctor.probe import Probe
    from hpcgpu.doctor.render import render_json, render_report, render_table
    from hpcgpu.doctor.result import exit_status
    from hpcgpu.doctor.runner import run_doctor

    probe = Probe(checkpoint_dir=checkpoint_dir, nproc=nproc, timeout=timeout, slurm_nodes=slurm_nodes)
    progress = _show_progress if sys.stderr.isatty() and not (as_json or report) else None
    results = run_doctor(probe, functional=not no_functional, slurm=slurm, on_start=progress)
    if progress:
        click.echo("\r\033[K", nl=False, err=True)
    if as_json:
        click.echo(render_json(results, __version__), nl=False)
    elif report:
        click.echo(render_report(results, __version__), nl=False)
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        click.echo(render_table(results, width=width, color=sys.stdout.isatty()), nl=False)
    return exit_status(results)


def _show_progress(i: int, total: int, name: str) -> None:
    """A one-line '[i/N] checking name' counter on stderr, so the slow all-reduce does not look hung."""
    click.echo(f"\r\033[K[{i}/{total}] checking {name}...", nl=False, err=True)
