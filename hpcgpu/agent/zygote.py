"""Ranks forked from one process that has imported torch already, instead of each importing it.

A rank that torchrun starts is a fresh interpreter: each one spends seconds of CPU importing torch and
torch._dynamo (which DDP and every optimizer's step import) before its first step, and on a node with
fewer free cores than ranks those imports queue. The node agent instead starts one preloaded process
(hpcgpu/worker/zygote.py) as soon as it knows the ranks' command line and environment: it imports
what every rank imports while the agent imports torch elastic and meets the other nodes, then forks
each rank on request. A forked rank is what the fresh one would be after the same imports: its own
session, signal dispositions, standard streams, environment, and the same command line in `ps`.

Only what cannot change what the imports did may differ between the preloaded process and a rank:
the variables torch elastic and hpcgpu set per rank and per attempt (rank, addresses, restart
count, heartbeat file), which nothing reads at import. A rank whose command line or other variables
differ, any rank when HPCGPU_FORK_RANKS=0, and every rank once the preloaded process is gone, is
started the way torch elastic starts it (subprocess.Popen of a fresh interpreter).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import Mapping, Optional, Sequence

from hpcgpu.contract import envnames
from hpcgpu.contract.zygote import receive, send

#: set per rank or per attempt by torch elastic (LocalElasticAgent._start_workers, its logs spec) and by
#: hpcgpu's agent (watchdog, network, resume); read when the process group, store or run starts, never
#: at import, so they may differ between the preloaded process and a rank
PER_RANK_NAMES = frozenset({"RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE",
                            "WORLD_SIZE", "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
PER_RANK_PREFIXES = ("TORCHELASTIC_", "TORCH_ELASTIC_", "TORCH_NCCL_", "NCCL_", "GLOO_", "TORCH_FR_", "HPCGPU_")


def may_differ(name: str) -> bool:
    return name in PER_RANK_NAMES or name.startswith(PER_RANK_PREFIXES)


def same_imports(preloaded: Mapping[str, str], rank: Mapping[str, str]) -> bool:
    """Whether a rank with environment `rank` imports what the process preloaded under `preloaded` did."""
    names = set(preloaded) | set(rank)
    return all(preloaded.get(n) == rank.get(n) for n in names if not may_differ(n))


def wanted(environ: Mapping[str, str]) -> bool:
    return environ.get(envnames.FORK_RANKS, "1") != "0" and hasattr(socket, "send_fds") and hasattr(os, "pidfd_open")


class Zygote:
    """The agent's side of the preloaded process: start it, ask it for ranks, hear how they ended."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]):
        self.argv = tuple(argv)
        self.env = dict(env)
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # its own session: a Ctrl-C on the terminal is for the agent, which stops the ranks itself
        self._proc = subprocess.Popen(self.argv, env={**self.env, envnames.ZYGOTE_FD: str(theirs.fileno())},
                                      pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        self._lock = threading.Lock()
        self._codes: dict[int, int] = {}
        self._replies: list[dict] = []
        self.gone = False

    def fits(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        return not self.gone and tuple(argv) == self.argv and same_imports(self.env, env)

    def spawn(self, env: Mapping[str, str], fds: Mapping[str, int]) -> Optional["ForkedRank"]:
        """Fork a rank with this environment and these stdout/stderr; None when the zygote is gone."""
        with self._lock:
            try:
                send(self._sock, {"env": dict(env), "fds": list(fds)}, tuple(fds.values()))
            except OSError:
                self.gone = True
                return None
            while not self._replies and not self.gone:
                self._receive(None)
            if self.gone:
                return None
            reply = self._replies.pop(0)
        return ForkedRank(self, reply["pid"]) if "pid" in reply else None

    def _receive(self, timeout: Optional[float]) -> bool:
        """File one message (under the lock); False when none came within timeout."""
        if timeout is not None and not select.select([self._sock], [], [], timeout)[0]:
            return False
        try:
            message, _ = receive(self._sock)
        except OSError:
            message = None
        if message is None:
            self.gone = True  # and with it every rank it forked (PR_SET_PDEATHSIG)
            return True
        if "exit" in message:
            self._codes[message["exit"]] = message["code"]
        else:
            self._replies.append(message)
        return True

    def returncode(self, pid: int, timeout: Optional[float]) -> Optional[int]:
        """pid's exit code (as Popen.returncode), waiting up to timeout (None: as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while pid not in self._codes:
                if self.gone:
                    return -signal.SIGKILL
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._receive(left if left is not None else 1.0) and left is not None and left <= 0:
                    return None
            return self._codes[pid]

    def close(self) -> None:
        """End the zygote (any rank still running ends with it, as with the agent)."""
        self._sock.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class ForkedRank:
    """What torch elastic uses of a rank's Popen object."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid
        self.returncode: Optional[int] = None
        self.args = zygote.argv

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            self.returncode = self.zygote.returncode(self.pid, 0)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.returncode(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkedHandler:
    """torch elastic's SubprocessHandler for a forked rank: same files, same teardown."""

    def __init__(self, proc: ForkedRank, stdout, stderr, local_rank_id: int):
        self.proc = proc
        self._stdout, self._stderr = stdout, stderr
        self.local_rank_id = local_rank_id

    @classmethod
    def start(cls, zygote: Zygote, env: Mapping[str, str], stdout: Optional[str], stderr: Optional[str],
              local_rank_id: int) -> Optional["ForkedHandler"]:
        out = open(stdout, "w") if stdout else None  # noqa: SIM115 (closed by close(), as torch's)
        err = open(stderr, "w") if stderr else None  # noqa: SIM115
        fds = {name: f.fileno() for name, f in (("stdout", out), ("stderr", err)) if f is not None}
        proc = zygote.spawn(env, fds)
        if proc is None:
            for f in (out, err):
                if f is not None:
                    f.close()
            return None
        return cls(proc, out, err, local_rank_id)

    def close(self, death_sig: Optional[int] = None) -> None:
        try:
            os.killpg(self.proc.pid, death_sig or signal.SIGTERM)
        except ProcessLookupError:
            pass  # reaped already (the zygote reaps at once; a Popen child would linger as a zombie)
        for f in (self._stdout, self._stderr):
            if f is not None:
                f.close()


_current: Optional[Zygote] = None


def start(argv: Sequence[str], environ: Mapping[str, str]) -> Optional[Zygote]:
    """Start the preloaded process for ranks run as argv under environ (None when turned off)."""
    global _current
    if not wanted(environ):
        return None
    try:
        _current = Zygote(argv, environ)
    except OSError:  # no process to spare, or no interpreter there: torch elastic starts fresh ranks
        _current = None
    return _current


def stop() -> None:
    global _current
    if _current is not None:
        _current.close()
        _current = None


def handler_for(entrypoint: str, args: tuple, env: Mapping[str, str], stdout: Optional[str],
                stderr: Optional[str], local_rank_id: int) -> Optional[ForkedHandler]:
    """A forked rank for torch elastic's handler factory, when the zygote fits it; else None."""
    full_env = {**os.environ, **env}  # what SubprocessHandler gives a rank
    argv = (entrypoint, *[str(a) for a in args])
    if _current is None or not _current.fits(argv, full_env):
        return None
    return ForkedHandler.start(_current, full_env, stdout, stderr, local_rank_id)
