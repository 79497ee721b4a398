"""Files in a run directory that every layer reads or writes: private dirs, atomic JSON, result.json.

Torch-free and pydantic-free (the node agent writes result.json; the host reads it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

#: how the run's last attempt ended, written by node 0's agent: {"exit_code": N, "ended": epoch s}
RESULT_FILE = "result.json"
#: how many times node 0's agent restarted the ranks after a failure (distributed.max_restarts), all launches
RESTARTS_FILE = "elastic_restarts.json"


def make_private_dir(path: Path) -> Path:
    """Create a directory readable only by its owner (run dirs may hold checkpoints and env)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private_text(path: Path, text: str) -> None:
    """Write text so readers never see half a file; the file is private to the user (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        # a full disk fails the write or the close: leave no half-written temporary behind, and
        # name the file the caller asked for, not the temporary (same errno, same OSError subclass)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OSError(e.errno, e.strerror, str(path)) from e


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so readers never see half a file; the file is private to the user."""
    write_private_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """The JSON in path, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_result(run_dir: Path, exit_code: int) -> None:
    """Record how this attempt ended (`status` reads it after the scheduler forgot the job)."""
    write_json_atomic(Path(run_dir) / RESULT_FILE, {"exit_code": exit_code, "ended": time.time()})


def read_result(run_dir: Path, since: float = 0.0) -> Optional[dict[str, Any]]:
    """result.json, or None when absent or written before `since` (an earlier attempt's)."""
    result = read_json(Path(run_dir) / RESULT_FILE)
    if result is None or float(result.get("ended") or 0) < since:
        return None
    return result


def count_elastic_restart(run_dir: Path) -> int:
    """One more restart of the ranks by the node agent; the new total (`status` adds it up)."""
    total = elastic_restarts(run_dir) + 1
    write_json_atomic(Path(run_dir) / RESTARTS_FILE, {"restarts": total, "time": time.time()})
    return total


def elastic_restarts(run_dir: Path) -> int:
    """How many times the node agent restarted this run's ranks after a failure, over all launches."""
    return int((read_json(Path(run_dir) / RESTARTS_FILE) or {}).get("restarts") or 0)


def hang_reports(run_dir: Path) -> list[Path]:
    """The hang reports the watchdog wrote in this run (hang-<time>.md), oldest first."""
    return sorted(Path(run_dir).glob("hang-*.md"))


def last_hang(run_dir: Path) -> Optional[str]:
    """One line on the newest hang report: which rank(s) on which node(s), and where the report is."""
    reports = hang_reports(run_dir)
    if not reports:
        return None
    data = read_json(reports[-1].with_suffix(".json")) or {}
    culprits = data.get("culprits") or []
    several = len({r.get("node_rank") for r in data.get("ranks", [])}) > 1
    hosts = sorted({f"node {r.get('node_rank')} ({r.get('host', '?')})" if several else r.get("host", "?")
                    for r in data.get("ranks", []) if r.get("rank") in culprits})
    who = (f"rank(s) {', '.join(map(str, culprits))} on {', '.join(hosts)}" if culprits
           else "no rank behind (every rank waited at the same place)")
    count = f" ({len(reports)} hangs in all)" if len(reports) > 1 else ""
    return f"{who}; {reports[-1]}{count}"


#: the nodes a Slurm job excludes after hangs, and why (backends/slurm/node_hangs.py writes it)
EXCLUDED_FILE = "excluded.json"


def load_excluded(run_dir: Path) -> dict[str, Any]:
    """{"nodes": [...], "requeues": n, "history": [...]}: what earlier hangs excluded."""
    return read_json(Path(run_dir) / EXCLUDED_FILE) or {"nodes": [], "requeues": 0, "history": []}
