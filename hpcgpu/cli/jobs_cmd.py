"""`hpcgpu status`, `hpcgpu logs`, `hpcgpu cancel`: the same for local runs and Slurm jobs, from any directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import click

from hpcgpu.cli.run_facts import run_state
from hpcgpu.contract.errors import UserError


@click.command()
@click.argument("run", required=False)
@click.option("-n", "--limit", default=10, show_default=True, help="How many recent runs to list.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON for scripts: one object for RUN, else a list (same keys as the one-run view).")
def status(run, limit, as_json) -> int:
    """Show one run or sweep (by id, id prefix, Slurm job id or path), or list recent runs.

    \b
    Examples:
      hpcgpu status                       # the 10 most recent runs, local and Slurm
      hpcgpu status demo-2026 --json      # one run, for scripts (state, job_id, restarts, ...)
      hpcgpu status SWEEP                 # a sweep: one line per task, then its results best first
    """
    import json

    from hpcgpu.host.runs import find_run, recent_runs
    from hpcgpu.host.sweep_record import find_sweep

    swept = find_sweep(run) if run else None
    if swept is not None:
        from dataclasses import asdict

        from hpcgpu.cli.sweep_view import status_text, sweep_rows

        rows = sweep_rows(swept)
        if as_json:
            click.echo(json.dumps({**{k: v for k, v in asdict(swept).items() if k != "tasks"}, "tasks": rows}, indent=1))
        else:
            click.echo(status_text(swept, rows), nl=False)
        return 0
    if run:
        state = run_state(find_run(run))
        if as_json:
            click.echo(json.dumps(state, indent=1))
            return 0
        for k, v in state.items():
            click.echo(f"{k + ':':<22}{v if v is not None else '-'}")
        return 0
    records = recent_runs(limit)
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
    sweeps = recent_sweeps(3)
    if sweeps:
        click.echo("\nrecent sweeps (their tasks are the runs <sweep>-t<N>; `hpcgpu status SWEEP` shows one):")
        for sweep in sweeps:
            click.echo(f"  {sweep.id:<38} {sweep.backend:<8} {len(sweep.tasks)} task(s)  {sweep.sweep_dir}")
    return 0


def recent_sweeps(limit: int) -> list:
    """The newest sweeps in the sweep index (their sweep.json only), oldest first."""
    from hpcgpu.host.sweep_record import iter_sweeps, load_sweep

    newest = list(dict(iter_sweeps()).values())[-limit:]
    return [load_sweep(d) for d in newest]


#: seconds between backend status calls while following a log: a Slurm status runs scontrol, so
#: keep it rare there; result.json, read every poll, says first that an attempt ended
STATUS_EVERY_S = {"local": 1.0, "slurm": 5.0}
#: seconds between reads of a followed log that had nothing new
POLL_S = 0.2


class EndWatch:
    """Tells cheaply whether a run has ended. result.json (node 0's agent writes it as an attempt
    ends) is read on every call; the backend, which decides (a Slurm job may be requeued after a
    stopped attempt), is asked when result.json changes, else at most every STATUS_EVERY_S."""

    def __init__(self, record, backend=None, clock=time.monotonic):
        from hpcgpu.backends import get_backend

        self.record, self.clock = record, clock
        self.backend = backend or get_backend(record.backend)
        self.every = STATUS_EVERY_S.get(record.backend, 2.0)
        self._next_ask, self._result_seen = 0.0, None

    def ended(self):
        """The run's RunStatus once it has ended, else None (also when its backend cannot be asked)."""
        from hpcgpu.contract.runfiles import read_result

        result = read_result(Path(self.record.run_dir))
        stamp = result.get("ended") if result else None
        now = self.clock()
        if stamp == self._result_seen and now < self._next_ask:
            return None
        self._result_seen, self._next_ask = stamp, now + self.every
        try:
            status = self.backend.status(self.record)
        except Exception:  # an unreachable scheduler: keep following, as `tail -f` would
            return None
        return status if status.state.ended else None


def _copy_new(f) -> bool:
    """Copy what is left in the open log f to stdout; whether there was anything."""
    copied = False
    while chunk := f.read(1 << 16):
        sys.stdout.buffer.write(chunk)
        copied = True
    sys.stdout.flush()
    return copied


def _missing_log(record, rank: int, path: Path) -> UserError:
    have = sorted(p.name for p in path.parent.glob("rank*.log"))
    hint = f"logs present: {', '.join(have) or 'none yet'}"
    if record.backend == "slurm" and record.job_id:
        hint += (f"; before the ranks start, each node logs to {record.run_dir}/submitit/"
                 f"{record.job_id}_<node>_log.out (a pending job has none yet: hpcgpu status {record.id})")
    return UserError(f"no log for rank {rank} in {path.parent}", hint=hint)


def _ended_line(record, status) -> str:
    why = f" ({status.reason})" if status.reason else ""
    return f"hpcgpu: run {record.id} ended: {status.state}{why}"


def follow_log(record, rank: int, path: Path, watch: EndWatch) -> int:
    """`logs -f`: wait for the log while the run has not ended (a pending job has none yet), print
    it as it grows, and once the run has ended print what is left and return 0, saying on stderr
    how it ended. Raises the missing-log UserError when the run ended without this rank's log."""
    if not path.exists():
        ended = watch.ended()
        if ended is None:
            click.echo(f"hpcgpu: waiting for {path.name} of run {record.id} (not written yet)", err=True)
        while ended is None and not path.exists():
            time.sleep(POLL_S)
            ended = watch.ended()
        if not path.exists():
            raise _missing_log(record, rank, path)
    with open(path, "rb") as f:
        while True:
            if _copy_new(f):
                continue
            ended = watch.ended()
            if ended is not None:
                _copy_new(f)  # the ranks wrote their last lines before the agent recorded the end
                click.echo(_ended_line(record, ended), err=True)
                return 0
            time.sleep(POLL_S)


def print_all_ranks(record, dedup: bool) -> None:
    """`logs --all` / `--dedup`: every rank's log merged in time order, each line prefixed."""
    from hpcgpu.contract.ranklines import dedup as group, group_prefix, merge_ranks, rank_logs, timed_lines

    logs_dir = Path(record.run_dir) / "logs"
    paths = rank_logs(logs_dir)
    if not paths:
        raise _missing_log(record, 0, logs_dir / "rank0.log")
    merged = merge_ranks({rank: timed_lines(path, path.with_suffix(".idx")) for rank, path in paths.items()})
    out = sys.stdout
    if dedup:
        for ranks, text in group(merged):
            out.write(group_prefix(ranks) + text + "\n")
    else:
        for _t, rank, text in merged:
            out.write(group_prefix([rank]) + text + "\n")
    out.flush()


@click.command()
@click.argument("run")
@click.option("--rank", type=click.IntRange(min=0), default=None, help="Which rank's log  [default: 0].")
@click.option("--all", "all_ranks", is_flag=True,
              help="Every rank's log, merged in time order, each line prefixed [rank N].")
@click.option("--dedup", is_flag=True,
              help="Like --all, with a line that several ranks printed shown once: [ranks 0-7] loading data.")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing as the log grows until the run ends (Ctrl-C stops following, not the run); "
                   "waits for a log not written yet while the run is pending or starting.")
@click.option("--task", type=click.IntRange(min=0), default=None, metavar="N", help="Of a sweep: task N's log.")
def logs(run, rank, all_ranks, dedup, follow, task=None) -> int:
    """Print a rank's log (appended across restarts and requeues), or all ranks' logs merged.

    \b
    Examples:
      hpcgpu logs demo-2026                 # rank 0
      hpcgpu logs demo-2026 --rank 3 -f     # follow rank 3 until the run ends
      hpcgpu logs demo-2026 --all           # every rank, in time order: [rank N] ...
      hpcgpu logs demo-2026 --dedup         # ... identical lines once: [ranks 0-7] loading data

    Time order comes from <run dir>/logs/rank<N>.idx, written by the node agent as it reads each
    line (the node's clock); logs without one merge rank by rank.

    With -f: exits 0 once the run has ended and its log is printed, naming on stderr how it ended.
    """
    if (all_ranks or dedup) and (rank is not None or follow):
        raise UserError(f"--{'dedup' if dedup else 'all'} prints every rank's log as it stands; it cannot be "
                        f"combined with {'--rank' if rank is not None else '--follow'}",
                        hint="follow one rank with --rank N -f, or rerun --all once the run has ended")
    record = resolve_run(run, task)
    if all_ranks or dedup:
        print_all_ranks(record, dedup)
        return 0
    rank = rank or 0
    path = Path(record.run_dir) / "logs" / f"rank{rank}.log"
    if follow:
        try:
            return follow_log(record, rank, path, EndWatch(record))
        except KeyboardInterrupt:
            click.echo(f"\nhpcgpu: stopped following; run {record.id} goes on", err=True)
            return 130
    if not path.exists():
        raise _missing_log(record, rank, path)
    with open(path, "rb") as f:
        _copy_new(f)
    return 0


def resolve_run(ref: str, task: Optional[int]):
    """The run `ref` names; of a sweep, its task `task` (which a sweep needs)."""
    from hpcgpu.host.runs import find_run
    from hpcgpu.host.sweep_record import find_sweep

    swept = find_sweep(ref)
    if swept is None:
        if task is not None:
            raise UserError(f"--task picks a task of a sweep; {ref!r} names a run, not a sweep")
        return find_run(ref)
    if task is None:
        raise UserError(f"{swept.id} is a sweep of {len(swept.tasks)} task(s): say which with --task N",
                        hint=f"`hpcgpu status {swept.id}` lists them")
    return find_run(swept.task(task)["run_dir"])


@click.command()
@click.argument("run")
@click.option("--task", type=click.IntRange(min=0), default=None, metavar="N",
              help="Of a sweep: cancel task N only (without it, every task of the sweep).")
def cancel(run, task=None) -> int:
    """Stop a run: ranks get SIGTERM, checkpoint and exit (Slurm: scancel). Of a sweep: every
    task (local: the sweep's runner stops its running tasks and starts no more), or --task N."""
    from hpcgpu.backends import get_backend
    from hpcgpu.host.sweep_record import find_sweep

    swept = find_sweep(run) if task is None else None
    if swept is not None:
        from hpcgpu.cli.sweep_view import cancel_sweep

        click.echo(cancel_sweep(swept))
        return 0
    record = resolve_run(run, task)
    get_backend(record.backend).cancel(record)
    click.echo(f"cancel requested for {record.id}" + (f" (job {record.job_id})" if record.job_id else ""))
    return 0
