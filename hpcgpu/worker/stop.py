"""Stop requests from signals, agreed across ranks at a step boundary.

SIGTERM, SIGHUP (the launching terminal or SSH session went away), SIGUSR1 and SIGUSR2 (Slurm's
warning before a time limit or preemption) and the first SIGINT ask for a clean stop: finish the
step, checkpoint, exit 75. They are idempotent, since a rank
may get the same signal from the node agent and from `scancel --signal` directly. A second SIGINT
means "now": flush and exit 130 without a checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

_lock = threading.Lock()
_requested: Optional[str] = None  # name of the first signal that asked for a stop
_sigints = 0
_main_pid: Optional[int] = None
# Task entries and scripts that call should_stop() stop cooperatively; until a script does, SIGTERM
# and SIGINT keep their usual effect so a plain torchrun script is not left running until SIGKILL.
_cooperative = True


def _handle(signum: int, frame) -> None:
    global _requested, _sigints
    # DataLoader workers are forked with these handlers; their parent shuts them down, so ignore.
    if os.getpid() != _main_pid:
        return
    name = signal.Signals(signum).name
    if not _cooperative and signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        _default_action(signum)
    if signum == signal.SIGINT:
        _sigints += 1
        if _sigints >= 2:
            _exit_now(name)
    if _requested is None:
        _requested = name
        if _cooperative:
            _note(f"hpcgpu: {name} received: stopping at the next step boundary with a checkpoint")
        else:
            _note(f"hpcgpu: {name} received, but this script never calls dist.should_stop(): it keeps running")


def _default_action(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _note(text: str) -> None:
    # os.write, not sys.stderr: the handler may interrupt a print, and buffered IO is not reentrant.
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass


def _exit_now(name: str) -> None:
    _note(f"hpcgpu: second {name}: exiting now without a checkpoint")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):
            pass
    os._exit(130)


def install(cooperative: bool = True) -> None:
    """Install the stop handlers in this (the main) thread; idempotent.

    cooperative=False (scripts): SIGTERM and SIGINT act as usual until should_stop() is first called.
    """
    global _main_pid, _cooperative
    with _lock:
        if _main_pid == os.getpid():
            return
        _main_pid, _cooperative = os.getpid(), cooperative
    for sig in (*STOP_SIGNALS, signal.SIGINT):
        signal.signal(sig, _handle)
    shield_loader_workers()


def request(reason: str = "requested") -> None:
    """Ask for a stop from code (tests, user callbacks), as a signal would."""
    global _requested
    if _requested is None:
        _requested = reason


def requested() -> Optional[str]:
    """This rank's stop reason (a signal name), or None; no communication."""
    return _requested


def cooperative() -> bool:
    """True when this process stops cooperatively (a task entry, or a script that calls should_stop)."""
    return _cooperative


def reset() -> None:
    """Forget a stop request (tests)."""
    global _requested, _sigints
    _requested, _sigints = None, 0


def should_stop(device: Optional["torch.device"] = None) -> bool:
    """True on every rank when any rank was asked to stop: call it on all ranks at the same step.

    One all-reduce (MAX) of a single integer, so all ranks stop at the same step.
    """
    import torch
    import torch.distributed as tdist

    global _cooperative
    _cooperative = True
    local = _requested is not None
    if not (tdist.is_available() and tdist.is_initialized()):
        return local
    if device is None:
        device = _collective_device()
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    agreed = bool(flag.item())
    if agreed and not local:
        request("another rank")
    return agreed


def _collective_device() -> "torch.device":
    import torch
    import torch.distributed as tdist

    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shield_loader_workers() -> None:
    """DataLoader workers serve on through stop signals; their rank stops them after its checkpoint.

    torch elastic signals each rank's whole process group, and Slurm every process of the step, so
    the workers get SIGTERM too. torch's worker SIGTERM handler exits unless the sender is the parent,
    and the rank then fails with "DataLoader worker is killed by signal: Terminated" before it can
    checkpoint. Workers run torch's _set_worker_signal_handlers first thing after the fork, so
    wrapping it covers every loader of this rank (the Trainer's and a script's, persistent or not).
    """
    try:
        from torch.utils.data._utils import signal_handling
    except ImportError:  # a rank without torch never forks loader workers
        return
    original = getattr(signal_handling, "_set_worker_signal_handlers", None)
    if original is None:
        _note("hpcgpu: warning: this torch has no DataLoader worker signal hook; a stop signal sent to "
              "the whole process group can kill loader workers before their rank checkpoints")
        return
    if getattr(original, "_hpcgpu", False):
        return

    def set_worker_signal_handlers(*args, **kwargs):
        original(*args, **kwargs)
        _serve_through_stops()

    set_worker_signal_handlers._hpcgpu = True
    signal_handling._set_worker_signal_handlers = set_worker_signal_handlers


def _serve_through_stops() -> None:
    """In a loader worker: ignore stop signals, but still exit on the parent's own SIGTERM.

    The parent terminates its workers itself (multiprocessing does at interpreter exit, persistent
    workers included), so SIGTERM cannot simply be ignored: it is blocked here, before the worker
    starts any thread, and one thread waits for it and exits only when the sender is the parent,
    as torch's own handler does. Other stop signals are ignored outright.
    """
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_on_parents_sigterm, args=(os.getppid(),), daemon=True,
                     name="hpcgpu-worker-sigterm").start()


def _exit_on_parents_sigterm(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)
