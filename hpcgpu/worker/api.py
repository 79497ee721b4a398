"""Helpers for hand-written training loops: the same guarantees the built-in Trainer has.

Re-exported as `from hpcgpu import dist`. Works under `hpcgpu run`, plain torchrun, srun, or alone.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any, Optional

import torch

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import context, stop
from hpcgpu.worker import heartbeat as _heartbeat
from hpcgpu.worker import dist as _dist
from hpcgpu.worker.rank import RankInfo
from hpcgpu.worker.saver import Checkpointer
from hpcgpu.worker.state import rng_state, set_rng_state, spec_fingerprint
from hpcgpu.worker.tracking import Trackers, open_trackers, setup_from_spec

_saver: Optional[Checkpointer] = None
_trackers: Optional[Trackers] = None


def init() -> RankInfo:
    """Pick this rank's device, start the process group (timeout from the spec), agree on the resume point."""
    ctx = context.current()
    if ctx.device is None:
        backend = ctx.plan.process_group_backend if ctx.plan else ctx.spec.distributed.backend
        ctx.device = _dist.init_distributed(ctx.info, backend, ctx.spec.distributed.timeout_s,
                                            context.planned_device(ctx))
        stop.install(cooperative=False)
        if not ctx.resolved:
            context.resolve_resume(ctx, os.environ)
        context.agree_resume(ctx)
    return ctx.info


def rank_info() -> RankInfo:
    """rank, local_rank, world_size, local_world_size, node_rank."""
    return context.current().info


def is_main() -> bool:
    """True on global rank 0."""
    return context.current().info.is_main


def device() -> torch.device:
    """This rank's device: the planned one (HPCGPU_DEVICE) under hpcgpu, before and after init();
    without a plan, what init() picked (the CPU before)."""
    ctx = context.current()
    if ctx.device is not None:
        return ctx.device
    planned = context.planned_device(ctx)
    return torch.device(planned) if planned else torch.device("cpu")


def print0(*args: Any, **kwargs: Any) -> None:
    """print on rank 0 only (flushed, so it shows up in the console at once)."""
    context.current().print0(*args, **kwargs)


def barrier() -> None:
    """Wait for every rank."""
    _dist.barrier(context.current().device)


def run_dir() -> Path:
    """This run's directory (logs/, checkpoints/, tb/, exit/)."""
    return context.current().run_dir


def checkpoint_dir() -> Path:
    """Where checkpoints go."""
    return context.current().ckpt_dir


def run_id() -> str:
    """The run's identity, the same across restarts, `--resume` and Slurm requeues (the run id
    `hpcgpu status` shows; without hpcgpu, the run directory's name). Trackers file the run under it."""
    return context.run_id(context.current())


def log_metrics(step: int, metrics: dict[str, float]) -> None:
    """Send `{name: number}` at `step` to every tracker the spec names (logging.trackers: TensorBoard
    in `<run dir>/tb`, MLflow, W&B), under run_id(), from rank 0; other ranks do nothing, so call it
    on every rank or on rank 0 alone. A tracker that fails warns once; the script goes on.

    The first step this process logs is where it continues the tracked run: what an earlier attempt
    logged from that step on (it got further than its last checkpoint) is hidden in TensorBoard."""
    global _trackers
    ctx = context.current()
    if not ctx.info.is_main:
        return
    if _trackers is None:
        setup = setup_from_spec(ctx.spec.model_dump(mode="json"), context.run_id(ctx), ctx.run_dir,
                                ctx.info.world_size, start_step=max(step - 1, 0))
        _trackers = open_trackers(setup)
        atexit.register(_close_trackers)
    _trackers.log(step, metrics)


def _close_trackers() -> None:
    """At exit: flush every tracker; the tracked run ends stopped after a stop request, else done."""
    global _trackers
    if _trackers is not None:
        _trackers.close("stopped" if stop.requested() else "done")
        _trackers = None


def should_stop() -> bool:
    """True on every rank once any rank got a stop signal; call it on all ranks at each step boundary.
    Each call is also a heartbeat for the hang watchdog (a step ended)."""
    _heartbeat.step_boundary()
    return stop.should_stop(_collective_device())


def heartbeat(phase: str = "user", step: Optional[int] = None) -> None:
    """Tell the hang watchdog this rank made progress (cheap: two stores to shared memory; call it as
    often as you like). phase: one of start, data, forward, backward, optimizer, collective,
    checkpoint, eval, user; step: your step number (shown in hang reports). should_stop() beats too."""
    _heartbeat.user_beat(phase, step)


def _collective_device() -> torch.device:
    dev = context.current().device
    return dev if dev is not None and dev.type == "cuda" else torch.device("cpu")


def _checkpointer() -> Checkpointer:
    global _saver
    if _saver is None:
        ctx = context.current()
        spec = ctx.spec.checkpoint
        _saver = Checkpointer(ctx.ckpt_dir, spec.keep_last, spec.async_save, ctx.info.is_main,
                              report=lambda s: print(s, flush=True))
    return _saver


def save_checkpoint(state: dict, step: int) -> Optional[Path]:
    """Atomically save `state` (tensors and plain values) as checkpoint `step`; rank 0 writes, others return None.

    Safe to call on every rank or on rank 0 only; with checkpoint.async_save it returns after the
    copy to CPU and the write continues in the background (wait_for_checkpoint() blocks for it).
    """
    ctx = context.current()
    _heartbeat.beat("checkpoint", step)
    spec_hash, spec_json = spec_fingerprint(ctx.spec.model_dump(mode="json"))
    payload = {"user": state, "step": step, "rng": rng_state(), "spec": {"hash": spec_hash, "json": spec_json}}
    return _checkpointer().save(step, payload, {"world_size": ctx.info.world_size, "spec_hash": spec_hash})


def load_checkpoint(path: Optional[str] = None, restore_rng: bool = False,
                    map_location: Any = "cpu") -> Optional[dict]:
    """The state saved by save_checkpoint (plus its "step"), from `path` or the resume point; None if none.

    restore_rng=True also restores the python/numpy/torch RNG states of the saving rank.
    """
    ctx = context.current()
    if path is None:
        if not ctx.resolved:
            context.resolve_resume(ctx, os.environ)
        path = ctx.resume_from
    if not path:
        return None
    payload = ckpt.load_state(Path(path), map_location)
    if "user" not in payload:
        raise ckpt.CheckpointError(f"{path} was not written by dist.save_checkpoint (a Trainer checkpoint?)")
    if restore_rng:
        set_rng_state(payload["rng"])
    state = payload["user"]
    state.setdefault("step", payload["step"])
    return state


def wait_for_checkpoint() -> None:
    """Block until an async checkpoint write in flight is durable."""
    if _saver is not None:
        _saver.wait()


def last_checkpoint() -> Optional[tuple[int, Optional[Path]]]:
    """(step, path) of the last save_checkpoint call in this process, or None."""
    if _saver is None or _saver.last_step is None:
        return None
    return _saver.last_step, _saver.last
