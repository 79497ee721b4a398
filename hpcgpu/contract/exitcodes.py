"""Exit statuses of every hpcgpu command; documented in docs/checkpointing.md."""

OK = 0
#: training failed (a rank raised or was killed); the summary names the rank
FAILED = 1
#: bad input (spec, flags, missing script or GPUs), or the run directory cannot be written (full disk,
#: read-only, logging.dir not a directory): a fix before the run, like bad input; nothing was started
USAGE = 2
#: stopped cleanly on a signal (preemption, time limit, Ctrl-C) after a checkpoint: resumable.
#: 75 is EX_TEMPFAIL from sysexits.h: "temporary failure, retry later".
STOPPED_RESUMABLE = 75
