"""The helpers a training script imports: `from hpcgpu import dist`.

    info = dist.init()                      # device, process group, resume point
    state = dist.load_checkpoint()          # None on a first run
    for step in range(start, steps):
        ...
        if step % 100 == 0:
            dist.save_checkpoint({"model": model.state_dict(), ...}, step)
        dist.log_metrics(step, {"loss": loss})  # rank 0, to logging.trackers, under dist.run_id()
        if dist.should_stop():              # a signal reached any rank: save and leave
            dist.save_checkpoint({...}, step)
            break

Worker-side: importing this imports torch (the CLI never does).
"""

from hpcgpu.worker.api import (  # noqa: F401
    barrier,
    checkpoint_dir,
    device,
    heartbeat,
    init,
    is_main,
    last_checkpoint,
    load_checkpoint,
    log_metrics,
    print0,
    rank_info,
    run_dir,
    run_id,
    save_checkpoint,
    should_stop,
    wait_for_checkpoint,
)
from hpcgpu.worker.checkpoint import CheckpointError  # noqa: F401
from hpcgpu.worker.rank import RankInfo  # noqa: F401
from hpcgpu.worker.task import Task  # noqa: F401

__all__ = [
    "init", "rank_info", "is_main", "device", "print0", "barrier", "run_dir", "checkpoint_dir",
    "should_stop", "heartbeat", "save_checkpoint", "load_checkpoint", "wait_for_checkpoint", "last_checkpoint",
    "run_id", "log_metrics", "CheckpointError", "RankInfo", "Task",
]
