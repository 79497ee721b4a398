"""This rank's view of the run: rank, spec, directories, and the checkpoint to resume from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu.contract import envnames
from hpcgpu.contract.specview import SpecView, load_resolved
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker.rank import RankInfo, detect_rank


@dataclass
class WorkerContext:
    """What every part of the worker needs to know, read once from the environment."""

    info: RankInfo
    spec: SpecView  # or hpcgpu.host.spec.Spec when no resolved spec file was given
    run_dir: Path
    ckpt_dir: Path
    console_tty: bool = False
    resume_from: Optional[Path] = None
    skipped: list = field(default_factory=list)  # broken checkpoints passed over by resume
    device: Optional[object] = None  # torch.device once the process group is up
    resolved: bool = False  # resume_from has been looked up

    def print0(self, *args, **kwargs) -> None:
        """print on rank 0 only, flushed."""
        if self.info.is_main:
            print(*args, **kwargs, flush=True)


def restart_count(env: Mapping[str, str]) -> int:
    """Torch elastic restarts of this attempt plus Slurm requeues of the job."""
    return int(env.get("TORCHELASTIC_RESTART_COUNT") or 0) + int(env.get("SLURM_RESTART_COUNT") or 0)


def from_env(env: Mapping[str, str]) -> WorkerContext:
    """Build the context from the variables the node agent sets (defaults for a bare `python -m`)."""
    if env.get(envnames.SPEC_FILE):
        spec = load_resolved(env[envnames.SPEC_FILE])  # written by hpcgpu, already valid
    else:  # a bare `torchrun -m hpcgpu.worker`: ./hpcgpu.yaml or the demo, validated here
        from hpcgpu.host.spec import load_spec

        spec, _ = load_spec(None)
    run_dir = Path(env.get(envnames.RUN_DIR) or Path(spec.logging.dir) / spec.name).absolute()
    ckpt_dir = Path(env.get(envnames.CKPT_DIR) or spec.checkpoint.dir or run_dir / "checkpoints").absolute()
    return WorkerContext(info=detect_rank(env), spec=spec, run_dir=run_dir, ckpt_dir=ckpt_dir,
                         console_tty=env.get(envnames.CONSOLE_TTY) == "1")


def resolve_resume(ctx: WorkerContext, env: Mapping[str, str]) -> Optional[Path]:
    """Pick the checkpoint to resume from (the agent's choice if it made one), report it, remember it."""
    chosen = env.get(envnames.RESUME_FROM)
    if chosen:
        ctx.resume_from = Path(chosen)
    else:
        ctx.resume_from = ckpt.resolve_resume(ctx.spec.checkpoint.resume, ctx.ckpt_dir,
                                              report=lambda s: print(s, flush=True), skipped=ctx.skipped)
    ctx.resolved = True
    return ctx.resume_from


def export(ctx: WorkerContext, env: dict) -> None:
    """Export the resume point and restart count for user code."""
    env[envnames.RESUME_FROM] = str(ctx.resume_from or "")
    env[envnames.RESTART_COUNT] = str(restart_count(env))
    env.setdefault(envnames.RUN_DIR, str(ctx.run_dir))
    env.setdefault(envnames.CKPT_DIR, str(ctx.ckpt_dir))


def agree_resume(ctx: WorkerContext) -> Optional[Path]:
    """After the process group is up: every rank takes rank 0's choice; rank 0 sets broken ones aside."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        choice = [str(ctx.resume_from or "")]
        tdist.broadcast_object_list(choice, src=0)
        ctx.resume_from = Path(choice[0]) if choice[0] else None
    if ctx.info.is_main:
        for path in ctx.skipped:
            if path.exists():
                print(f"hpcgpu: moved broken checkpoint aside: {ckpt.quarantine(path)}", flush=True)
    ctx.skipped.clear()
    return ctx.resume_from


_current: Optional[WorkerContext] = None


def current() -> WorkerContext:
    """The process-wide context, built from os.environ on first use."""
    global _current
    if _current is None:
        _current = from_env(os.environ)
    return _current


def set_current(ctx: Optional[WorkerContext]) -> None:
    """Install (or clear, with None) the process-wide context."""
    global _current
    _current = ctx
