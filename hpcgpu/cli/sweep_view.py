"""What `hpcgpu status SWEEP` and the end of a sweep show: one line per task, and the tasks'
final metrics ranked best first. Torch-free."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

from hpcgpu.host.sweep import ranked
from hpcgpu.host.sweep_record import SweepRecord

#: bytes read from the end of rank 0's log for the last progress line
LOG_TAIL = 16384
#: a Trainer progress line or bar: `step 30/40 epoch 0 loss 0.1234 ...` or `30/40 ep 0 loss 0.1234`
_PROGRESS = re.compile(r"(\d+)/\d+ (?:epoch|ep) \d+ loss (\S+)")


def last_progress(text: str) -> tuple[Optional[int], Optional[float]]:
    """(step, loss) of the last progress line in a log's text; (None, None) when there is none."""
    found = _PROGRESS.findall(text)
    if not found:
        return None, None
    step, loss = found[-1]
    try:
        return int(step), float(loss)
    except ValueError:
        return int(step), None


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """summary.json's numbers: its top-level values and those of nested sections as `section/key`."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[sub if "/" in str(sub) else f"{key}/{sub}"] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def task_row(record: SweepRecord, task: dict[str, Any]) -> dict[str, Any]:
    """One task's line: state, step, last loss, requeues, final metrics."""
    from hpcgpu.cli.run_facts import run_state
    from hpcgpu.contract.runfiles import read_json
    from hpcgpu.host.runs import find_run

    run_dir = Path(task["run_dir"])
    row: dict[str, Any] = {"index": task["index"], "overrides": task["overrides"], "label": task["label"],
                           "run_id": task["run_id"], "state": "QUEUED" if record.backend == "local" else "PENDING",
                           "step": None, "loss": None, "restarts": 0, "job_id": None, "metrics": {},
                           "run_dir": str(run_dir)}
    if not (run_dir / "run.json").exists():
        return row
    state = run_state(find_run(str(run_dir)))
    row.update(state=state["state"], restarts=state["restarts"], job_id=state["job_id"],
               step=state["last_checkpoint_step"])
    try:
        with open(run_dir / "logs" / "rank0.log", "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - LOG_TAIL))
            step, loss = last_progress(f.read().decode(errors="replace"))
    except OSError:
        step, loss = None, None
    row["step"] = step if step is not None else row["step"]
    row["loss"] = loss
    summary = read_json(run_dir / "summary.json")
    if summary:
        row["metrics"] = summary_metrics(summary)
        row["step"] = summary.get("steps", row["step"])
        if isinstance(summary.get("final_loss"), (int, float)):
            row["loss"] = summary["final_loss"]
    return row


def sweep_rows(record: SweepRecord) -> list[dict[str, Any]]:
    return [task_row(record, t) for t in record.tasks]


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def status_text(record: SweepRecord, rows: list[dict[str, Any]]) -> str:
    """`hpcgpu status SWEEP`: the sweep, one line per task, then the ranked table of finished ones."""
    width = max([len(r["label"]) for r in rows] + [9])
    lines = [f"sweep:     {record.id} ({record.backend}, {len(rows)} task(s))",
             f"sweep dir: {record.sweep_dir}"]
    if record.job_ids:
        lines.append(f"array job: {', '.join(record.job_ids)}")
    lines.append("")
    lines.append(f"{'TASK':>4}  {'OVERRIDES':<{width}}  {'STATE':<12} {'STEP':>7} {'LOSS':>10} {'REQUEUES':>8}")
    for r in rows:
        lines.append(f"{r['index']:>4}  {r['label'] or '(base spec)':<{width}}  {r['state']:<12} {_num(r['step']):>7} "
                     f"{_num(r['loss']):>10} {r['restarts']:>8}")
    table = results_text(record, rows)
    return "\n".join(lines) + ("\n\n" + table if table else "") + "\n"


def results_text(record: SweepRecord, rows: list[dict[str, Any]]) -> str:
    """The finished tasks' final metrics, best first by the sweep's metric ('' when none finished)."""
    done = [r for r in rows if r["metrics"] and r["state"] == "DONE"]  # a stopped task's loss is not final
    if not done:
        return ""
    names = [record.metric] + sorted({k for r in done for k in r["metrics"]} - {record.metric}
                                     & {"final_loss", "steps", "samples_per_s", "wall_s"})
    names += sorted({k for r in done for k in r["metrics"] if k.startswith("eval")} - set(names))
    width = max([len(r["label"]) for r in done] + [9])
    head = f"{'RANK':>4} {'TASK':>4}  {'OVERRIDES':<{width}}  " + " ".join(f"{n:>14}" for n in names)
    out = [f"results, best first by {record.metric} ({record.goal}):", head]
    for place, r in enumerate(ranked(done, record.metric, record.goal), 1):
        out.append(f"{place:>4} {r['index']:>4}  {r['label'] or '(base spec)':<{width}}  "
                   + " ".join(f"{_num(r['metrics'].get(n)):>14}" for n in names))
    return "\n".join(out)


def cancel_sweep(record: SweepRecord) -> str:
    """Stop every task of a sweep: locally its runner (SIGTERM: it stops its running tasks, each
    checkpoints, and starts no more); on Slurm, scancel of its array jobs with tasks not ended.
    UserError when nothing runs. Returns what was done, in words."""
    import os
    import signal

    from hpcgpu.contract.errors import UserError
    from hpcgpu.contract.procs import signal_process

    if record.backend == "local":
        if record.host != os.uname().nodename:
            raise UserError(f"sweep {record.id} runs on {record.host}; cancel it there")
        if not record.pid or not signal_process(record.pid, record.pid_start, signal.SIGTERM):
            raise UserError(f"sweep {record.id} is not running; nothing was signalled",
                            hint=f"continue it with: hpcgpu run local --resume {record.id}")
        return f"cancel requested for sweep {record.id} (its running tasks checkpoint and stop)"
    from hpcgpu.backends.slurm.backend import _run
    from hpcgpu.backends.slurm.planner import valid_job_id

    live = {str(r["job_id"]).split("_")[0] for r in sweep_rows(record)
            if r["job_id"] and r["state"] in ("PENDING", "RUNNING", "HELD", "UNKNOWN")}
    if not live:
        raise UserError(f"every task of sweep {record.id} has ended; nothing to cancel")
    for job_id in sorted(live):
        out = _run(["scancel", valid_job_id(job_id)])
        if out.returncode != 0:
            raise UserError(f"scancel {job_id} failed: {out.stderr.strip()}")
    return f"cancel requested for sweep {record.id} (array job {', '.join(sorted(live))})"
