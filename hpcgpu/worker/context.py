"""This rank's view of the run: rank, plan, spec, device, directories, and the checkpoint to resume from."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu.contract import envnames
from hpcgpu.contract.node import attempt_restarts
from hpcgpu.contract.plan import Plan, load_plan
from hpcgpu.contract.specview import RESOLVED_HEADER, SpecView
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker.rank import RankInfo, detect_rank


@dataclass
class WorkerContext:
    """What every part of the worker needs to know, read once from the environment."""

    info: RankInfo
    spec: SpecView
    run_dir: Path
    ckpt_dir: Path
    plan: Optional[Plan] = None  # None under a launcher that is not hpcgpu (plain torchrun, srun, python)
    console_tty: bool = False
    resume_from: Optional[Path] = None
    skipped: list = field(default_factory=list)  # broken checkpoints passed over by resume (ckpt.Skipped)
    lost_all: bool = False  # checkpoints existed but none could be used: this run restarts from step 0
    device: Optional[object] = None  # torch.device once the process group is up
    resolved: bool = False  # resume_from has been looked up

    def print0(self, *args, **kwargs) -> None:
        """print on rank 0 only, flushed."""
        if self.info.is_main:
            print(*args, **kwargs, flush=True)


def from_env(env: Mapping[str, str]) -> WorkerContext:
    """Build the context from the plan the node agent names (defaults for a bare `python -m`)."""
    plan = load_plan(env[envnames.PLAN_FILE]) if env.get(envnames.PLAN_FILE) else None
    if plan is not None:
        return WorkerContext(info=detect_rank(env), spec=SpecView(plan.spec_data()), run_dir=Path(plan.run_dir),
                             ckpt_dir=Path(plan.ckpt_dir), plan=plan,
                             console_tty=env.get(envnames.CONSOLE_TTY) == "1")
    spec = spec_without_plan(env)
    run_dir = Path(env.get(envnames.RUN_DIR) or Path(spec.logging.dir) / spec.name).absolute()
    ckpt_dir = Path(env.get(envnames.CKPT_DIR) or spec.checkpoint.dir or run_dir / "checkpoints").absolute()
    return WorkerContext(info=detect_rank(env), spec=spec, run_dir=run_dir, ckpt_dir=ckpt_dir,
                         console_tty=env.get(envnames.CONSOLE_TTY) == "1")


def spec_without_plan(env: Mapping[str, str]) -> SpecView:
    """A rank started by another launcher (`torchrun -m hpcgpu.worker`): HPCGPU_SPEC_FILE, else
    ./hpcgpu.yaml, else the bundled demo. A resolved spec is read as plain data; a hand-written one
    is validated by the host layer: the one place a rank may import it (ranks hpcgpu starts never do)."""
    path = env.get(envnames.SPEC_FILE) or ("hpcgpu.yaml" if Path("hpcgpu.yaml").is_file() else None)
    text = Path(path).read_text(encoding="utf-8") if path else ""
    if text.startswith(RESOLVED_HEADER):
        import yaml

        return SpecView(yaml.safe_load(text) or {})
    from hpcgpu.host.spec import load_spec, resolved_data  # noqa: layer-exception (see docstring)

    # resolved_data, not model_dump: this view is what checkpoints record, and a hand-written
    # spec's secret env values must not end up in them
    return SpecView(resolved_data(load_spec(path)[0]))


def run_id(ctx: WorkerContext) -> str:
    """The run's identity, the same on every attempt, resume and requeue: the plan's run id (without
    a plan, the run directory's name). Every tracker files the run under it."""
    return ctx.plan.run_id if ctx.plan is not None else ctx.run_dir.name


def planned_device(ctx: WorkerContext) -> Optional[str]:
    """This rank's device as the plan says (`cpu`, `cuda:N`); None without a plan."""
    return ctx.plan.device_of(ctx.info.local_rank) if ctx.plan is not None else None


#: where rank 0 leaves its resume verdict in the agent's store (one key per attempt: see verdict_key)
VERDICT_KEY = "hpcgpu/resume-verdict"


def share_mode(info: RankInfo, env: Mapping[str, str]) -> str:
    """How the ranks agree on the resume point before the process group exists:

    `alone`: one rank, nothing to share; `store`: rank 0 verifies and leaves the verdict in the
    store torch elastic's agent serves at MASTER_ADDR:MASTER_PORT (hpcgpu's agent and torchrun);
    `each`: no store before init_process_group (srun starting every rank, hand-made launches), so
    every rank verifies, as before, and agree_resume takes rank 0's choice after init."""
    if info.world_size == 1:
        return "alone"
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return "store" if agent_store and env.get("MASTER_ADDR") and env.get("MASTER_PORT") else "each"


def verdict_key(env: Mapping[str, str]) -> str:
    """The store key of this attempt's verdict: a store that outlives a restart (plain torchrun)
    must not hand a restarted rank the previous attempt's verdict."""
    return f"{VERDICT_KEY}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def encode_verdict(resume_from: Optional[Path], error: Optional[str] = None) -> bytes:
    """Rank 0's verdict as store bytes: the checkpoint to resume from ("" for none), or the error
    every rank must fail with (an explicitly named checkpoint that does not verify)."""
    return json.dumps({"resume_from": str(resume_from or ""), "error": error}).encode()


def decode_verdict(data: bytes) -> Optional[Path]:
    """The checkpoint of an encoded verdict (None: start at step 0); CheckpointError for an error verdict."""
    verdict = json.loads(data)
    if verdict["error"]:
        raise ckpt.CheckpointError(verdict["error"])
    return Path(verdict["resume_from"]) if verdict["resume_from"] else None


def _agent_store(env: Mapping[str, str], timeout_s: float):
    """A client of the agent's store (the one init_process_group will use)."""
    from torch.distributed import TCPStore

    return TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                    timeout=timedelta(seconds=timeout_s))


def _verify_here(ctx: WorkerContext, for_whom: str) -> Optional[Path]:
    """Hash the checkpoints on this rank and pick the newest valid one (or the named one); say how
    much was hashed, and for whom, so a log shows whether resume read a checkpoint once or per rank."""
    report = (lambda s: print(s, flush=True))
    path = ckpt.resolve_resume(ctx.spec.checkpoint.resume, ctx.ckpt_dir, report=report, skipped=ctx.skipped)
    if path is not None and path.is_dir() and ctx.info.world_size > 1:
        size = sum(f["bytes"] for f in ckpt.read_manifest(path)["files"].values())
        print(f"hpcgpu: verified {path.name} ({size / 1e6:.1f} MB) once {for_whom}", flush=True)
    return path


def verify_and_share(ctx: WorkerContext, store, key: str) -> Optional[Path]:
    """Rank 0 verifies and leaves the verdict under `key`; the other ranks wait for it and hash
    nothing. Rank 0's failure is every rank's failure, with the same message."""
    if ctx.info.is_main:
        try:
            path = _verify_here(ctx, f"for all {ctx.info.world_size} ranks")
        except Exception as e:  # the others would wait for a verdict that never comes
            why = str(e) if isinstance(e, ckpt.CheckpointError) else f"rank 0 could not verify: {type(e).__name__}: {e}"
            store.set(key, encode_verdict(None, why))
            raise
        store.set(key, encode_verdict(path))
        return path
    store.wait([key])  # rank 0 hashing a large checkpoint: as long as init_process_group would wait for it
    path = decode_verdict(store.get(key))
    print(f"hpcgpu: resume point verified by rank 0, not hashed again here: {path or 'none (step 0)'}", flush=True)
    return path


def resolve_resume(ctx: WorkerContext, env: Mapping[str, str]) -> Optional[Path]:
    """Pick the checkpoint to resume from (the agent's choice if it made one), report it, remember it.

    Runs before the process group exists (user scripts get the choice as HPCGPU_RESUME_FROM before
    they start). Hashing reads every byte of a checkpoint: done once, by rank 0, for all the ranks
    of the job wherever the agent's store can carry the verdict (see share_mode)."""
    chosen = env.get(envnames.RESUME_FROM)
    if chosen:
        ctx.resume_from = Path(chosen)
    elif ctx.spec.checkpoint.resume != "never" and share_mode(ctx.info, env) == "store":
        store = _agent_store(env, ctx.spec.distributed.timeout_s)
        ctx.resume_from = verify_and_share(ctx, store, verdict_key(env))
    else:
        ctx.resume_from = _verify_here(ctx, "on this rank")
    ctx.resolved = True
    return ctx.resume_from


def export(ctx: WorkerContext, env: dict) -> None:
    """Export the resume point and restart count for user code."""
    env[envnames.RESUME_FROM] = str(ctx.resume_from or "")
    env[envnames.RESTART_COUNT] = str(attempt_restarts(env))
    device = planned_device(ctx)
    if device is not None:
        env[envnames.DEVICE] = device
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
        moved = [ckpt.Skipped(ckpt.quarantine(s.path), s.reason) for s in ctx.skipped if s.path.exists()]
        if ctx.resume_from is None and moved:
            # not a first run: every checkpoint was broken, and all progress is gone; say so loudly
            ctx.lost_all = True
            print(ckpt.all_lost_warning(ctx.ckpt_dir, moved), flush=True)
        else:
            for s in moved:
                print(f"hpcgpu: moved broken checkpoint aside: {s.path}", flush=True)
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
