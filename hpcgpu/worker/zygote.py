"""The preloaded process a node agent forks its ranks from (why and when: hpcgpu/agent/zygote.py).

The agent starts it with the ranks' own command line (`python -m hpcgpu.worker ...`, so a forked rank
shows that command in `ps` as a fresh one does) and environment, plus envnames.ZYGOTE_FD naming its
end of a socket to the agent. `serve` imports what every rank imports, then forks one rank per
request; it returns only in a forked rank, once that rank has its own session, the signal
dispositions, standard streams and environment a freshly started rank has, and the rank then goes
on exactly as `python -m hpcgpu.worker` does after the same imports.

The messages: hpcgpu/contract/zygote.py.
"""

from __future__ import annotations

import importlib
import io
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Sequence

from hpcgpu.contract import envnames
from hpcgpu.contract.procs import die_with_parent
from hpcgpu.contract.zygote import receive, send

#: what every rank imports besides what `python -m hpcgpu.worker` imports first: DDP and every
#: optimizer's step import torch._dynamo (seconds of CPU), and the ranks' collectives and loaders
PRELOAD = ("torch.distributed", "torch.nn.parallel", "torch._dynamo", "torch.utils.data")
#: stop signals from a terminal or `pkill -f`: the ranks handle them; the zygote must outlive them,
#: because its end kills every rank it forked (their PR_SET_PDEATHSIG, hpcgpu/worker/__main__.py)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def serve(preload: Sequence[str] = PRELOAD) -> None:
    """Import preload, then fork ranks until the agent closes the socket (or dies: then this process
    gets SIGKILL, and so does every rank it forked). Returns in each forked rank."""
    sock = socket.socket(fileno=int(os.environ.pop(envnames.ZYGOTE_FD)))
    die_with_parent(os.getppid(), 0)  # and when the agent is gone already, there is nothing to serve
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    for name in preload:
        importlib.import_module(name)
    if not pidfds_work():
        os._exit(0)  # the agent starts fresh ranks instead
    zygote = os.getpid()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    ranks: dict[int, int] = {}  # pidfd -> pid
    while True:
        for key, _ in selector.select():
            if key.fileobj is not sock:
                _report_exit(sock, selector, key.fd, ranks.pop(key.fd))
                continue
            request, fds = receive(sock, 2)
            if request is None:
                os._exit(0)  # the agent is done: any rank still running gets SIGKILL, as with the agent
            pid = _fork_rank(sock, selector, ranks, request, fds, zygote)
            if pid == 0:
                return  # in the new rank, set up as a fresh one
            if pid > 0:
                pidfd = os.pidfd_open(pid)
                ranks[pidfd] = pid
                selector.register(pidfd, selectors.EVENT_READ)


def _fork_rank(sock: socket.socket, selector: selectors.BaseSelector, ranks: dict[int, int], request: dict,
               fds: list[int], zygote: int) -> int:
    """Fork one rank; 0 in it once it is set up, its pid here once it said so (then the agent hears
    {"pid": P}), -1 when it could not be forked or set up (the agent hears {"error": ...} and starts
    that rank fresh)."""
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        pid, error = -1, f"fork: {e}"
    if pid == 0:
        os.close(ready_r)
        selector.close()
        for pidfd in ranks:
            os.close(pidfd)
        sock.close()
        try:
            become_rank(request["env"], dict(zip(request["fds"], fds)), zygote)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os.write(ready_w, b"1")  # after setsid: the agent may signal its process group from now on
        os.close(ready_w)
        return 0
    os.close(ready_w)
    for fd in fds:
        os.close(fd)
    if pid > 0:
        ready = os.read(ready_r, 1) == b"1"  # b"" when it died setting up
        if not ready:
            os.waitpid(pid, 0)
            pid, error = -1, "the forked rank failed to set up (its traceback is in its stderr)"
    os.close(ready_r)
    send(sock, {"pid": pid} if pid > 0 else {"error": error})
    return pid


def pidfds_work() -> bool:
    """Whether this kernel gives pidfds (Linux 5.3+), by which the zygote hears its ranks end."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _report_exit(sock: socket.socket, selector: selectors.BaseSelector, pidfd: int, pid: int) -> None:
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def become_rank(env: dict, fds: dict[str, int], zygote_pid: int) -> None:
    """Turn this fresh fork into what torch elastic's Popen would have started, after its imports."""
    die_with_parent(zygote_pid, 0)  # as the rank does first thing (worker/__main__.py): no rank outlives its zygote
    os.setsid()  # torch elastic starts every rank in its own session (start_new_session=True)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python's startup sets it
    for name, target in (("stdout", 1), ("stderr", 2)):
        if name in fds:
            os.dup2(fds[name], target)
            os.close(fds[name])
    os.environ.clear()
    os.environ.update(env)
    sys.stdout = sys.__stdout__ = standard_stream(1, sys.stdout, "<stdout>")
    sys.stderr = sys.__stderr__ = standard_stream(2, sys.stderr, "<stderr>")
    if "numpy.random" in sys.modules:  # a fresh rank seeds numpy's global generator from the OS
        sys.modules["numpy.random"].seed()  # (Python's random reseeds itself after a fork)


def standard_stream(fd: int, old: io.TextIOWrapper, name: str) -> io.TextIOWrapper:
    """sys.stdout (fd 1) or sys.stderr (fd 2) over what fd is now (a terminal, a pipe, a file), as
    Python's startup makes it; the old stream says whether Python runs unbuffered (-u)."""
    line_buffering, write_through = stream_buffering(os.isatty(fd), fd == 2, old.write_through)
    binary = io.open(fd, "wb", buffering=0 if write_through else -1, closefd=False)
    (binary if write_through else binary.raw).name = name
    return io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors, newline="\n",
                            line_buffering=line_buffering, write_through=write_through)


def stream_buffering(is_tty: bool, is_stderr: bool, unbuffered: bool) -> tuple[bool, bool]:
    """(line_buffering, write_through) of a standard stream at Python's startup (Python/pylifecycle.c
    create_stdio): -u writes through; otherwise lines are flushed on a terminal, and always on stderr
    (Python 3.9+); a pipe or file is block-buffered."""
    if unbuffered:
        return False, True
    return is_tty or is_stderr, False
