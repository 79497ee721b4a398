"""Run directories and the run index that `status`, `logs` and `cancel` use from any directory.

A run directory holds everything about one run:
    plan.json       the plan every node and rank executes (hpcgpu.contract.plan)
    spec.yaml       the resolved spec, for people and `--resume`
    run.json        what was launched: id, backend, job id / launcher pid and start time, nodes, created
    result.json     how the last attempt ended (written by node 0's agent: exit status, when)
    logs/           rank{N}.log per rank (appended across restarts), rank{N}.idx (when each line was read,
                    for `logs --all`: hpcgpu/contract/ranklines.py), agent logs, NCCL logs
    checkpoints/    step-numbered checkpoints (unless checkpoint.dir points elsewhere)
    tb/             TensorBoard events
    exit/           rank{N}.json: how each rank ended (done / stopped)
The index is one JSON line per run in $HPCGPU_HOME/runs.jsonl (default ~/.local/state/hpcgpu).
Torch-free.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from hpcgpu.contract import envnames
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.runfiles import make_private_dir, read_json, write_json_atomic


def state_home(environ: Optional[dict] = None) -> Path:
    """Where the run index lives."""
    environ = os.environ if environ is None else environ
    if environ.get(envnames.HOME):
        return Path(environ[envnames.HOME])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hpcgpu"


def new_run_id(name: str, now: Optional[float] = None) -> str:
    """`<name>-<YYYYmmdd-HHMMSS>-<4 hex>`: sortable, and unique when two runs start in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class RunRecord:
    """What the index and run.json say about a run."""

    id: str
    run_dir: str
    backend: str
    created: float
    nodes: int = 1
    job_id: Optional[str] = None
    pid: Optional[int] = None
    #: the launcher's start time (contract.procs.start_time): with pid, it names that process only
    pid_start: Optional[int] = None
    host: str = field(default_factory=lambda: os.uname().nodename)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def create_run_dir(base: str, run_id: str) -> Path:
    """Create `<base>/<run_id>` with its subdirectories, private to the user."""
    root = make_private_dir(Path(base).absolute() / run_id)
    for sub in ("logs", "checkpoints", "tb", "exit", "rdzv"):
        make_private_dir(root / sub)
    return root


def register(record: RunRecord, environ: Optional[dict] = None) -> None:
    """Write run.json and append the run to the index (one short O_APPEND write: safe concurrently)."""
    write_json_atomic(Path(record.run_dir) / "run.json", json.loads(record.to_json()))
    home = make_private_dir(state_home(environ))
    with open(home / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")


def update_record(run_dir: Path, **changes: Any) -> None:
    """Update fields of run.json (e.g. the job id once the scheduler gave one)."""
    data = read_json(run_dir / "run.json") or {}
    data.update(changes)
    write_json_atomic(run_dir / "run.json", data)


def iter_index(environ: Optional[dict] = None) -> Iterator[RunRecord]:
    """Runs in the index, newest last; entries whose run dir is gone are skipped."""
    path = state_home(environ) / "runs.jsonl"
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or not data.get("run_dir"):  # a damaged line: not a run
            continue
        run_json = read_json(Path(data["run_dir"]) / "run.json")
        if run_json is None:
            continue
        known = {k: run_json[k] for k in RunRecord.__dataclass_fields__ if k in run_json}
        yield RunRecord(**known)


def find_run(ref: str, environ: Optional[dict] = None) -> RunRecord:
    """Resolve a run by directory path, id, unique id prefix, or Slurm job id."""
    if Path(ref, "run.json").is_file():
        data = read_json(Path(ref, "run.json")) or {}
        return RunRecord(**{k: data[k] for k in RunRecord.__dataclass_fields__ if k in data})
    runs = list(iter_index(environ))
    exact = [r for r in runs if r.id == ref or r.job_id == ref]
    matches = exact or [r for r in runs if r.id.startswith(ref)]
    if not matches:
        raise UserError(f"no run matches {ref!r}", hint="`hpcgpu status` lists recent runs")
    if len({r.id for r in matches}) > 1:
        names = ", ".join(sorted({r.id for r in matches})[:5])
        raise UserError(f"{ref!r} matches several runs: {names}", hint="give more of the run id")
    return matches[-1]
