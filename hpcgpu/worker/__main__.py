"""`python -m hpcgpu.worker`: one rank, as started by the node agent (torch elastic) or torchrun.

Exit status: 0 done, 75 stopped cleanly after a checkpoint (resumable), 130 a second Ctrl-C,
anything else a failure (the traceback reaches the agent through torch elastic's error file).
"""

from __future__ import annotations

import atexit
import os
import runpy
import socket
import sys
import time
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from hpcgpu.contract import envnames, exitcodes
from hpcgpu.contract.node import attempt_restarts
from hpcgpu.contract.procs import die_with_parent
from hpcgpu.worker import api, context, heartbeat, stop
from hpcgpu.worker.dist import barrier, teardown
from hpcgpu.worker.rank import RankInfo, detect_rank
from hpcgpu.worker.report import write_exit


def redirect_output(run_dir: Path, info: RankInfo) -> Path:
    """Send fd 1 and 2 (C libraries such as NCCL included) to `<run dir>/logs/rank{R}.log`, appending.

    Under hpcgpu's node agent they already are: the agent reads them from pipes into that log and
    its console (hpcgpu/agent/ranklogs.py). Started otherwise (plain torchrun), the rank writes the
    log itself."""
    log = run_dir / "logs" / f"rank{info.rank}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get(envnames.RANK_OUTPUT) != "agent":
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    print(f"==== hpcgpu rank {info.rank}/{info.world_size} (local {info.local_rank}, node {info.node_rank}) "
          f"attempt {attempt_restarts(os.environ) + 1} (elastic restart "
          f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}, job restart "
          f"{os.environ.get(envnames.JOB_RESTARTS, '0')}) pid {os.getpid()} on {socket.gethostname()} "
          f"at {time.strftime('%Y-%m-%d %H:%M:%S %z')} ====", flush=True)
    if os.environ.get(envnames.NETWORK):  # several nodes: which interface, and why (agent/node.py)
        print(f"hpcgpu: {os.environ[envnames.NETWORK]}", flush=True)
    return log


def run_entry(ctx: context.WorkerContext) -> tuple[str, object, object]:
    """Run the spec's entry; return (status, step, checkpoint)."""
    entry = ctx.spec.entry
    if entry.kind != "task" and ctx.resume_from:
        ctx.print0(f"hpcgpu: {envnames.RESUME_FROM}={ctx.resume_from} (the newest valid checkpoint)")
    if entry.kind == "task":
        from hpcgpu.worker.trainer import run_task

        api.init()
        outcome = run_task(ctx)
        return outcome.status, outcome.step, outcome.checkpoint
    try:
        if entry.kind == "script":
            from hpcgpu.worker.script import run_script

            run_script(entry.script, list(entry.args))
        else:
            sys.argv = [entry.module, *entry.args]
            runpy.run_module(entry.module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code not in (0, exitcodes.STOPPED_RESUMABLE):
            raise
    api.wait_for_checkpoint()
    last = api.last_checkpoint()
    # A stop counts only if the script could see it (it calls should_stop); else it simply finished.
    stopped = code == exitcodes.STOPPED_RESUMABLE or (stop.requested() is not None and stop.cooperative())
    if stopped:
        # All ranks agreed to stop; wait for rank 0's save before anyone exits, because the agent
        # ends the other ranks as soon as one exits non-zero.
        barrier(ctx.device)
    return ("stopped" if stopped else "done"), last and last[0], last and last[1] and str(last[1])


def die_with_the_agent() -> None:
    """Ask the kernel to SIGKILL this rank when the process that started it dies.

    torch elastic starts every rank in its own session, so a node agent killed with SIGKILL (or by
    the OOM killer) would leave its ranks running, holding memory and GPUs. PR_SET_PDEATHSIG fires
    when the parent *thread* exits; the agent starts ranks from its main thread.
    """
    die_with_parent(os.getppid(), exitcodes.FAILED)


@record
def main() -> int:
    """Set up this rank, run its entry, record how it ended, always tear down."""
    die_with_the_agent()
    info = detect_rank()
    if os.environ.get(envnames.RUN_DIR):
        redirect_output(Path(os.environ[envnames.RUN_DIR]), info)
        heartbeat.start(Path(os.environ[envnames.RUN_DIR]), info.rank, info.local_rank)
    ctx = context.current()
    stop.install(cooperative=ctx.spec.entry.kind == "task")
    context.resolve_resume(ctx, os.environ)
    context.export(ctx, os.environ)
    try:
        status, step, ckpt = run_entry(ctx)
    except KeyboardInterrupt:
        write_exit(ctx.run_dir, info.rank, "interrupted")
        return 130
    except BaseException as e:
        write_exit(ctx.run_dir, info.rank, "failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    finally:
        teardown()
    write_exit(ctx.run_dir, info.rank, status, step, ckpt, reason=stop.requested())
    return exitcodes.OK if status == "done" else exitcodes.STOPPED_RESUMABLE


def exit_now(code: int) -> None:
    """Leave without interpreter teardown once everything is written and the process group is gone.

    torch's C++ threads (gloo, the TCPStore client) are sometimes still joinable when Python
    finalizes, and std::terminate then aborts a rank that had finished cleanly ("terminate called
    without an active exception", SIGABRT), which the agent would report as a failure.
    """
    atexit._run_exitfuncs()  # the user's atexit handlers (result hooks, wandb.finish) still run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if os.environ.get(envnames.ZYGOTE_FD):  # the node agent's preloaded process (agent/zygote.py)
        from hpcgpu.worker import zygote

        zygote.serve()  # returns in each rank forked from it
    exit_now(main())
