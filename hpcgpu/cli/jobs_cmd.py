"""`hpcgpu status`, `hpcgpu logs`, `hpcgpu cancel`: the same for local runs and Slurm jobs, from any directory."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import click

from hpcgpu.errors import UserError


def _latest_checkpoint_step(run_dir: Path):
    steps = [int(m.group(1)) for p in (run_dir / "checkpoints").glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name))]
    return max(steps) if steps else None


def run_state(record) -> dict:
    """Facts about a run for `status`: state from its backend, restarts, last checkpoint."""
    from hpcgpu.backends import get_backend
    from hpcgpu.runs import read_json

    run_dir = Path(record.run_dir)
    try:
        state = get_backend(record.backend).status(record)
    except Exception as e:  # an unreachable scheduler must not hide the rest
        state = f"UNKNOWN ({e})"
    info = read_json(run_dir / "run.json") or {}
    return {
        "id": record.id, "backend": record.backend, "state": state, "job_id": record.job_id,
        "nodes": info.get("nodelist") or record.nodes, "restarts": info.get("restarts", 0),
        "last_checkpoint_step": _latest_checkpoint_step(run_dir), "run_dir": record.run_dir,
    }


@click.command()
@click.argument("run", required=False)
@click.option("-n", "--limit", default=10, show_default=True, help="How many recent runs to list.")
def status(run, limit) -> int:
    """Show one run (by id, id prefix, Slurm job id or path), or list recent runs."""
    from hpcgpu.runs import find_run, iter_index

    if run:
        for k, v in run_state(find_run(run)).items():
            click.echo(f"{k + ':':<22}{v if v is not None else '-'}")
        return 0
    records = list({r.id: r for r in iter_index()}.values())[-limit:]
    if not records:
        click.echo("no runs yet: start one with `hpcgpu run local`")
        return 0
    click.echo(f"{'RUN':<40} {'BACKEND':<8} {'STATE':<10} {'JOB':<8} {'CKPT':>6}")
    for r in records:
        s = run_state(r)
        click.echo(f"{r.id:<40} {r.backend:<8} {s['state']:<10} {r.job_id or '-':<8} {s['last_checkpoint_step'] if s['last_checkpoint_step'] is not None else '-':>6}")
    return 0


@click.command()
@click.argument("run")
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True, help="Which rank's log.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows (Ctrl-C to stop).")
def logs(run, rank, follow) -> int:
    """Print a rank's log (appended across restarts and requeues)."""
    from hpcgpu.runs import find_run

    record = find_run(run)
    path = Path(record.run_dir) / "logs" / f"rank{rank}.log"
    if not path.exists():
        have = sorted(p.name for p in path.parent.glob("rank*.log"))
        raise UserError(f"no log for rank {rank} in {path.parent}", hint=f"logs present: {', '.join(have) or 'none yet'}")
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 16)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not follow:
                return 0
            else:
                time.sleep(0.2)


@click.command()
@click.argument("run")
def cancel(run) -> int:
    """Stop a run: ranks get SIGTERM, checkpoint and exit (Slurm: scancel)."""
    from hpcgpu.backends import get_backend
    from hpcgpu.runs import find_run

    record = find_run(run)
    get_backend(record.backend).cancel(record)
    click.echo(f"cancel requested for {record.id}" + (f" (job {record.job_id})" if record.job_id else ""))
    return 0
