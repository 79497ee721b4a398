"""How a run stands: one enum every backend reports, and the one map from exit status to state."""

from __future__ import annotations

from enum import Enum

from hpcgpu.contract import exitcodes


class RunState(str, Enum):
    """The state `hpcgpu status` shows; a backend maps its scheduler's states onto these."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    STOPPED = "STOPPED"
    """stopped cleanly after a checkpoint (exit 75): resumable"""
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    """stopped by a signal (Ctrl-C, SIGTERM, a preemption) before its ranks could checkpoint: during
    start-up, or they did not save within distributed.stop_grace_s; resumes from the previous checkpoint"""
    HUNG = "HUNG"
    """no rank made progress for watchdog.stall_s: the hang report in the run directory says which and where"""
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    LOST = "LOST"
    """the launcher ended without saying how (killed with SIGKILL, the machine restarted)"""
    HELD = "HELD"
    """held after a requeue (scontrol release or cancel ends it)"""
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        """The run will not go on by itself (HELD waits for a person: not ended, not running)."""
        return self not in (RunState.PENDING, RunState.RUNNING, RunState.HELD, RunState.UNKNOWN)

    @property
    def resumable(self) -> bool:
        """`--resume` may continue it: it ended without finishing (FAILED too: the fix may be outside
        the spec, e.g. a full disk), or nobody knows any more (UNKNOWN: the scheduler forgot the job)."""
        return self is RunState.UNKNOWN or (self.ended and self is not RunState.DONE)


def state_from_exit(code: int) -> RunState:
    """The state a node agent's exit status means: 0 DONE, 75 STOPPED, 76 HUNG, 128 + a stop signal
    INTERRUPTED (130: Ctrl-C), anything else FAILED (137, SIGKILL, is a kill, not a stop)."""
    if code == exitcodes.OK:
        return RunState.DONE
    if code == exitcodes.STOPPED_RESUMABLE:
        return RunState.STOPPED
    if code == exitcodes.HUNG:
        return RunState.HUNG
    if exitcodes.stopped_by_signal(code):
        return RunState.INTERRUPTED
    return RunState.FAILED
