"""The launcher's side of a node agent in its own process (`python -m hpcgpu.agent_child`). Torch-free.

Started first thing by `run local`, so the agent imports torch on another core while the launcher
validates the spec; handed the run directory once it exists. The agent runs in its own session:
signals meant for the run (Ctrl-C at the terminal, `hpcgpu cancel`'s SIGTERM, Slurm's USR1/USR2)
reach the launcher, which passes each one on exactly once, as the in-process agent would see it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Mapping, Optional

from hpcgpu.envnames import AGENT_IN_PROCESS

#: the signals the launcher passes on to the agent (the agent forwards them to the ranks)
FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def wait_forwarding_signals(child: subprocess.Popen) -> int:
    """Wait for child, passing FORWARD signals on to it; its exit status (128+N if killed by N)."""
    previous = {s: signal.signal(s, lambda signum, _f: child.send_signal(signum)) for s in FORWARD}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - code if code < 0 else code


class PrestartedAgent:
    """A node agent process that is importing torch while the launcher prepares the run."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @classmethod
    def start(cls) -> Optional["PrestartedAgent"]:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "hpcgpu.agent_child"], stdin=subprocess.PIPE,
                                    start_new_session=True)
        except OSError:
            return None  # the launcher runs the agent in-process instead
        return cls(proc)

    def run(self, run_dir: str, secret_env: Mapping[str, str]) -> Optional[int]:
        """Hand over the run and wait for it; None if the agent is gone (the caller runs it in-process)."""
        if self.proc.poll() is not None:
            return None
        order = json.dumps({"run_dir": run_dir, "env": dict(secret_env)}) + "\n"
        try:
            self.proc.stdin.write(order.encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            return None
        return wait_forwarding_signals(self.proc)

    def discard(self) -> None:
        """The run will not happen here (bad input, a container, a dry run): end the agent, quietly."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: it exits on its own once its imports are done
            except OSError:
                pass
            self.proc.kill()  # no need to wait for torch to finish importing
        self.proc.wait()


def prestart_wanted(dry_run: bool, container: Optional[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Only a real, bare run gets an early agent; HPCGPU_AGENT_IN_PROCESS=1 keeps the agent in the launcher."""
    return not dry_run and not container and environ.get(AGENT_IN_PROCESS) != "1"
