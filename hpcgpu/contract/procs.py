"""Process facts shared by the launcher side and the ranks. Torch-free."""

from __future__ import annotations

import os
import signal
from typing import Optional


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> Optional[int]:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat field 22); None when
    there is no such process. With the pid it names one process for good: a pid is reused, a
    (pid, start time) pair never is while the machine runs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def is_process(pid: int, started: Optional[int]) -> bool:
    """True while the process recorded as (pid, start time) runs; never for a reused pid."""
    return started is not None and start_time(pid) == started


def signal_process(pid: int, started: Optional[int], signum: int) -> bool:
    """Send signum to the recorded process only: False, sending nothing, once it has ended (even if its
    pid now belongs to another process). A pidfd pins the process between the check and the signal."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if not is_process(pid, started):
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def die_with_parent(parent: int, exit_code: int) -> None:
    """Ask the kernel for SIGKILL when this process's parent (the thread that started it) dies
    (PR_SET_PDEATHSIG, Linux); exit with exit_code if the parent `parent` is gone already."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: nothing to do
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(exit_code)
