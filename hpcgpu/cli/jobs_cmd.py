"""`hpcgpu status`, `hpcgpu logs`, `hpcgpu cancel`: the same for local runs and Slurm jobs, from any directory."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import click

from hpcgpu.contract.errors import UserError


def _checkpoint_dir(run_dir: Path) -> Path:
    """The plan's checkpoint directory (absolute), else <run dir>/checkpoints."""
    from hpcgpu.contract.runfiles import read_json

    plan = read_json(run_dir / "plan.json") or {}
    return Path(plan.get("ckpt_dir") or run_dir / "checkpoints")


def _latest_checkpoint_step(run_dir: Path):
    """The newest complete checkpoint's step (ones being written are hidden .step_* directories)."""
    steps = [int(m.group(1)) for p in _checkpoint_dir(run_dir).glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name))]
    return max(steps) if steps else None


def run_state(record) -> dict:
    """Facts about a run for `status`: state from its backend, nodes, restarts, last checkpoint."""
    from hpcgpu.backends import get_backend
    from hpcgpu.contract.runfiles import read_json

    run_dir = Path(record.run_dir)
    info = read_json(run_dir / "run.json") or {}
    state, reason, nodes, restarts = "", "", info.get("nodelist") or record.nodes, int(info.get("restarts") or 0)
    try:
        status = get_backend(record.backend).status(record)
        state, reason = str(status.state), status.reason
        nodes, restarts = status.nodes or nodes, max(restarts, status.restarts)
    except Exception as e:  # an unreachable scheduler must not hide the rest
        state = f"UNKNOWN ({e})"
    return {
        "id": record.id, "backend": record.backend, "state": state, "reason": reason or None,
        "job_id": record.job_id, "nodes": nodes, "restarts": restarts,
        "last_checkpoint_step": _latest_checkpoint_step(run_dir), "run_dir": record.run_dir,
    }


@click.command()
@click.argument("run", required=False)
@click.option("-n", "--limit", default=10, show_default=True, help="How many recent runs to list.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON for scripts: one object for RUN, else a list (same keys as the one-run view).")
def status(run, limit, as_json) -> int:
    """Show one run (by id, id prefix, Slurm job id or path), or list recent runs.

    \b
    Examples:
      hpcgpu status                       # the 10 most recent runs, local and Slurm
      hpcgpu status demo-2026 --json      # one run, for scripts (state, job_id, restarts, ...)
    """
    import json

    from hpcgpu.host.runs import find_run, iter_index

    if run:
        state = run_state(find_run(run))
        if as_json:
            click.echo(json.dumps(state, indent=1))
            return 0
        for k, v in state.items():
            click.echo(f"{k + ':':<22}{v if v is not None else '-'}")
        return 0
    records = list({r.id: r for r in iter_index()}.values())[-limit:]
    if as_json:
        click.echo(json.dumps([run_state(r) for r in records], indent=1))
        return 0
    if not records:
        click.echo("no runs yet: start one with `hpcgpu run local`")
        return 0
    click.echo(f"{'RUN':<40} {'BACKEND':<8} {'STATE':<10} {'JOB':<8} {'NODES':<12} {'RESTARTS':>8} {'CKPT':>6}")
    for r in records:
        s = run_state(r)
        ckpt = s["last_checkpoint_step"] if s["last_checkpoint_step"] is not None else "-"
        click.echo(f"{r.id:<40} {r.backend:<8} {s['state']:<10} {r.job_id or '-':<8} {str(s['nodes']):<12} {s['restarts']:>8} {ckpt:>6}")
    return 0


@click.command()
@click.argument("run")
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True, help="Which rank's log.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows (Ctrl-C to stop).")
def logs(run, rank, follow) -> int:
    """Print a rank's log (appended across restarts and requeues)."""
    from hpcgpu.host.runs import find_run

    record = find_run(run)
    path = Path(record.run_dir) / "logs" / f"rank{rank}.log"
    if not path.exists():
        have = sorted(p.name for p in path.parent.glob("rank*.log"))
        hint = f"logs present: {', '.join(have) or 'none yet'}"
        if record.backend == "slurm" and record.job_id:
            hint += (f"; before the ranks start, each node logs to {record.run_dir}/submitit/"
                     f"{record.job_id}_<node>_log.out (a pending job has none yet: hpcgpu status {record.id})")
        raise UserError(f"no log for rank {rank} in {path.parent}", hint=hint)
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
    from hpcgpu.host.runs import find_run

    record = find_run(run)
    get_backend(record.backend).cancel(record)
    click.echo(f"cancel requested for {record.id}" + (f" (job {record.job_id})" if record.job_id else ""))
    return 0
