"""The local backend: run the node agent on this machine, in-process or inside a container."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from hpcgpu.contract import exitcodes
from hpcgpu.host.plan import Plan
from hpcgpu.host.runs import RunRecord, read_json, write_json_atomic
from hpcgpu.contract.procs import pid_alive

FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _run_in_container(plan: Plan) -> int:
    """Run prefix + node command as a child; forward our signals to it (its init passes them on)."""
    child = subprocess.Popen([*plan.container_prefix, *plan.node_argv], env={**os.environ, **plan.env})
    previous = {s: signal.signal(s, lambda signum, _f: child.send_signal(signum)) for s in FORWARD}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class LocalBackend:
    """Runs on this machine; `cancel` signals the launching process."""

    name = "local"

    def launch(self, plan: Plan) -> int:
        """Run to completion; return the node agent's exit status and record it in result.json."""
        run_dir = Path(plan.run_dir)
        if plan.container_prefix:
            code = _run_in_container(plan)
        else:
            from hpcgpu.agent.node import run_node  # imports torch: only now, never for --help

            code = run_node(run_dir)
        write_json_atomic(run_dir / "result.json", {"exit_code": code, "ended": time.time()})
        return code

    def status(self, record: RunRecord) -> str:
        result = read_json(Path(record.run_dir) / "result.json")
        if result is not None:
            return {exitcodes.OK: "DONE", exitcodes.STOPPED_RESUMABLE: "STOPPED"}.get(result["exit_code"], "FAILED")
        if record.pid and pid_alive(record.pid) and record.host == os.uname().nodename:
            return "RUNNING"
        return "UNKNOWN"

    def cancel(self, record: RunRecord) -> None:
        """SIGTERM the launcher: ranks checkpoint and stop (exit 75)."""
        if record.host != os.uname().nodename:
            raise RuntimeError(f"run {record.id} runs on {record.host}; cancel it there")
        if record.pid and pid_alive(record.pid):
            os.kill(record.pid, signal.SIGTERM)
