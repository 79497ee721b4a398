"""Process facts shared by the launcher side and the ranks. Torch-free."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(exit_code: int) -> None:
    """Ask the kernel to SIGKILL this process when the process that started it dies.

    PR_SET_PDEATHSIG fires when the parent *thread* exits; hpcgpu starts ranks and the node agent
    from a main thread. If the parent is already gone when this runs, exit now with exit_code.
    """
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: nothing to do
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(exit_code)
