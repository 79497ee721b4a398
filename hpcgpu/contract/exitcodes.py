"""Exit statuses of every hpcgpu command; documented in docs/checkpointing.md."""

import signal

OK = 0
#: training failed (a rank raised or was killed); the summary names the rank
FAILED = 1
#: bad input (spec, flags, missing script or GPUs), or the run directory cannot be written (full disk,
#: read-only, logging.dir not a directory): a fix before the run, like bad input; nothing was started
USAGE = 2
#: stopped cleanly on a signal (preemption, time limit, Ctrl-C) after a checkpoint: resumable.
#: 75 is EX_TEMPFAIL from sysexits.h: "temporary failure, retry later".
STOPPED_RESUMABLE = 75
#: hung: no rank made progress for watchdog.stall_s; the hang report (<run dir>/hang-<time>.md) names
#: the rank(s) behind. Resumable from the last checkpoint. 76 follows 75; sysexits.h's EX_PROTOCOL
#: meaning does not apply.
HUNG = 76

#: signals that ask a run to stop (hpcgpu.worker.stop's, plus Ctrl-C): a launcher or agent they end
#: before a checkpoint exits 128 + the signal's number, as a shell reports it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def ranks_stopped_cleanly(failed_exit_codes) -> bool:
    """The ranks that exited non-zero all said 75 (checkpointed on a stop): the run stopped, it did
    not fail. One rank that crashed, was killed (a negative code) or exited 1 among them is a failure,
    and so is no exit code at all (nothing stopped)."""
    codes = list(failed_exit_codes)
    return bool(codes) and all(code == STOPPED_RESUMABLE for code in codes)


def stopped_by_signal(code: int) -> bool:
    """128 + a stop signal: interrupted before a checkpoint, not failed."""
    return code - 128 in {int(s) for s in STOP_SIGNALS}
