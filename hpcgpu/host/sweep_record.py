"""The sweep directory and the sweep index, which `status`, `logs`, `cancel` and `--resume` use.

A sweep directory holds:
    sweep.json      the sweep: id, backend, its tasks (index, overrides, run id, run dir), the metric
                    the table ranks by, how many run at once, the Slurm array job ids, the local runner
    spec.yaml       the base spec (without its sweep: section); each task's spec.yaml is in its run dir
    t<i>-<label>/   task i's run dir (plan.json, logs/, checkpoints/, tb/, summary.json, ...)
    submitit/       (Slurm) the array job's script, pickles and per-node logs
    tasks/          (local) t<i>.out: what each task's launcher printed
The index is one JSON line per sweep in $HPCGPU_HOME/sweeps.jsonl. Torch-free.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.runfiles import make_private_dir, read_json, write_json_atomic
from hpcgpu.host.runs import state_home

SWEEP_FILE = "sweep.json"
INDEX_FILE = "sweeps.jsonl"


@dataclass
class SweepRecord:
    """What sweep.json says."""

    id: str
    sweep_dir: str
    backend: str
    created: float
    #: [{"index": i, "overrides": {...}, "run_id": ..., "run_dir": ...}]
    tasks: list[dict[str, Any]]
    metric: str = "final_loss"
    goal: str = "min"
    parallel: int = 0
    #: Slurm: the array job of each submission, oldest first (a --resume submits a new one)
    job_ids: list[str] = field(default_factory=list)
    #: local: the runner process (pid, start time) while it queues the tasks
    pid: Optional[int] = None
    pid_start: Optional[int] = None
    #: where the sweep was started: tasks started later (a --resume) resolve relative paths there
    cwd: str = ""
    host: str = field(default_factory=lambda: os.uname().nodename)

    def task(self, index: int) -> dict[str, Any]:
        """Task `index`, or UserError listing the valid ones."""
        for t in self.tasks:
            if t["index"] == index:
                return t
        raise UserError(f"sweep {self.id} has no task {index}", hint=f"its tasks are 0-{len(self.tasks) - 1}")


def write_sweep(record: SweepRecord) -> None:
    """sweep.json, private to the user, replaced atomically."""
    write_json_atomic(Path(record.sweep_dir) / SWEEP_FILE, asdict(record))


def update_sweep(sweep_dir: str, **changes: Any) -> SweepRecord:
    """Change fields of sweep.json; the record as written."""
    record = load_sweep(sweep_dir)
    for key, value in changes.items():
        setattr(record, key, value)
    write_sweep(record)
    return record


def load_sweep(sweep_dir: str) -> SweepRecord:
    data = read_json(Path(sweep_dir) / SWEEP_FILE)
    if not isinstance(data, dict):
        raise UserError(f"{sweep_dir} holds no readable {SWEEP_FILE}")
    return SweepRecord(**{k: data[k] for k in SweepRecord.__dataclass_fields__ if k in data})


def register_sweep(record: SweepRecord, environ: Optional[dict] = None) -> None:
    """Write sweep.json and add the sweep to the index (one short O_APPEND write)."""
    write_sweep(record)
    home = make_private_dir(state_home(environ))
    with open(home / INDEX_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": record.id, "sweep_dir": record.sweep_dir}) + "\n")


def iter_sweeps(environ: Optional[dict] = None) -> Iterator[tuple[str, str]]:
    """(id, sweep dir) of each indexed sweep whose directory still holds its sweep.json, oldest first."""
    path = state_home(environ) / INDEX_FILE
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("id") and Path(str(data.get("sweep_dir")), SWEEP_FILE).is_file():
            yield str(data["id"]), str(data["sweep_dir"])


def find_sweep(ref: str, environ: Optional[dict] = None) -> Optional[SweepRecord]:
    """The sweep `ref` names (its directory, id, or a unique id prefix), None when it names no sweep
    (it may name a run). Raises UserError when a prefix matches several sweeps."""
    if Path(ref, SWEEP_FILE).is_file():
        return load_sweep(ref)
    sweeps = dict(iter_sweeps(environ))
    if ref in sweeps:
        return load_sweep(sweeps[ref])
    matches = sorted(s for s in sweeps if s.startswith(ref))
    if not matches:
        return None
    # a prefix may name runs too (run and sweep ids look alike): only a sweep's own tasks may share it
    from hpcgpu.host.runs import index_entries

    others = sorted({e["id"] for e in index_entries(environ) if e["id"].startswith(ref)
                     and not any(e["id"].startswith(f"{m}-t") for m in matches)})
    if len(matches) > 1 or others:
        names = ", ".join([*matches, *others][:5])
        raise UserError(f"{ref!r} matches several sweeps or runs: {names}", hint="give more of the id")
    return load_sweep(sweeps[matches[0]])
