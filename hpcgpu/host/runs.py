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
import re
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


def _index_lines(environ: Optional[dict] = None) -> list[str]:
    try:
        return (state_home(environ) / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def _entry(line: str) -> Optional[dict[str, Any]]:
    """One index line as written when its run was registered; None for a damaged line."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("run_dir") and isinstance(data.get("id"), str) else None


def index_entries(environ: Optional[dict] = None, containing: str = "") -> list[dict[str, Any]]:
    """The index's lines as written when each run was registered (id, run_dir, backend, ...),
    oldest first; damaged lines skipped; only lines containing `containing` are parsed. Reads no
    run directory: cheap with 10,000 runs."""
    return [e for line in _index_lines(environ) if containing in line and (e := _entry(line)) is not None]


def load_record(entry: dict[str, Any]) -> Optional[RunRecord]:
    """The run as its run.json says now (job id, pid, ...); None when its run dir is gone."""
    run_json = read_json(Path(entry["run_dir"]) / "run.json")
    if run_json is None:
        return None
    return RunRecord(**{k: run_json[k] for k in RunRecord.__dataclass_fields__ if k in run_json})


def iter_index(environ: Optional[dict] = None) -> Iterator[RunRecord]:
    """Runs in the index, newest last; entries whose run dir is gone are skipped."""
    for entry in index_entries(environ):
        record = load_record(entry)
        if record is not None:
            yield record


def recent_runs(limit: int, environ: Optional[dict] = None) -> list[RunRecord]:
    """The `limit` most recently registered runs still on disk, oldest first. Reads only their
    run.json, so `hpcgpu status` costs the same with 10 runs in the index or 10,000."""
    seen: set[str] = set()
    found: list[RunRecord] = []
    for line in reversed(_index_lines(environ)):  # newest first, parsing only as far as needed
        entry = _entry(line)
        if len(found) >= limit:
            break
        if entry is None or entry["id"] in seen:
            continue
        seen.add(entry["id"])
        record = load_record(entry)
        if record is not None:
            found.append(record)
    return found[::-1]


#: a Slurm job id (12345, or 12345_7 for an array task): never a run id, which holds a date and a time
_JOB_ID = re.compile(r"\d+(_\d+)?")


def find_run(ref: str, environ: Optional[dict] = None) -> RunRecord:
    """Resolve a run by directory path, id, unique id prefix, or Slurm job id. By id or prefix only
    the matching runs' run.json are read; a job id (kept in run.json only) reads them all."""
    if Path(ref, "run.json").is_file():
        data = read_json(Path(ref, "run.json")) or {}
        return RunRecord(**{k: data[k] for k in RunRecord.__dataclass_fields__ if k in data})
    if _JOB_ID.fullmatch(ref):
        matches = [r for r in iter_index(environ) if r.job_id == ref or r.id == ref]
    else:
        entries = index_entries(environ, containing=ref)
        chosen = [e for e in entries if e["id"] == ref] or [e for e in entries if e["id"].startswith(ref)]
        matches = _live(chosen)
    if not matches:
        raise UserError(f"no run matches {ref!r}", hint="`hpcgpu status` lists recent runs")
    if len({r.id for r in matches}) > 1:
        names = ", ".join(sorted({r.id for r in matches})[:5])
        raise UserError(f"{ref!r} matches several runs: {names}", hint="give more of the run id")
    return matches[-1]


def _live(entries: list[dict[str, Any]]) -> list[RunRecord]:
    """The runs of these entries whose run dirs are still there, by id (each id's newest last);
    once five distinct live runs are found the rest are not read (the answer is "several")."""
    found: list[RunRecord] = []
    live = 0
    for run_id in sorted({e["id"] for e in entries}):
        records = [r for e in entries if e["id"] == run_id and (r := load_record(e)) is not None]
        found += records
        live += bool(records)
        if live >= 5:
            break
    return found
