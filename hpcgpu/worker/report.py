"""What the Trainer tells the user: resume warnings, the final summary, summary.json, exit records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from hpcgpu.worker.state import spec_changes

# Keys that may change between attempts without changing the training itself.
_HARMLESS = ("checkpoint.", "logging.", "distributed.max_restarts", "distributed.stop_grace_s",
             "distributed.timeout_s", "distributed.rdzv_timeout_s", "debug.", "slurm.", "container",
             "train.log_every", "train.num_workers", "train.eval_", "resources.time", "resources.mem", "env.", "secret_env")


def resume_changes(state: dict, spec_json: str, world_size: int) -> list[str]:
    """Warnings for a resume whose spec or world size differs from the checkpoint's."""
    lines = []
    old = state.get("spec", {})
    changes = [c for c in spec_changes(old.get("json", "{}"), spec_json) if not c.startswith(_HARMLESS)]
    if changes:
        lines.append(f"hpcgpu: warning: resuming with a changed spec; the run will not match an "
                     f"uninterrupted one. Changed: {'; '.join(changes)}")
    saved_world = state["progress"]["world_size"]
    if saved_world != world_size:
        lines.append(f"hpcgpu: warning: checkpoint saved with {saved_world} ranks, resuming on {world_size}: "
                     "the data order from here differs from an uninterrupted run")
    return lines


def print_summary(stats: dict, ckpt_dir: Path, flops_per_sample: Optional[float],
                  peak_flops: Optional[float] = None) -> None:
    """The last lines of rank 0's log: how it ended, loss, throughput (and MFU, given the summed
    dense peak FLOP/s of the devices that ran), where checkpoints are."""
    train_s = max(stats["train_s"], 1e-9)
    rate = stats["samples"] / train_s
    loss = stats["final_loss"]
    flops = flops_per_sample * rate if flops_per_sample else 0
    tflops = f", {flops / 1e12:.2f} TFLOP/s" if flops >= 1e10 else f", {flops / 1e9:.2f} GFLOP/s" if flops else ""
    if flops and peak_flops:
        tflops += f" (MFU {100 * flops / peak_flops:.1f}%)"
    print(f"hpcgpu: {stats['status']} at step {stats['steps']} ({stats['epochs']:.2f} epochs): "
          f"final loss {loss if loss is None else f'{loss:.4f} (the last step, mean over ranks)'}, "
          f"{rate:,.0f} samples/s{tflops}, "
          f"wall {stats['wall_s']:.1f} s", flush=True)
    print(f"hpcgpu: checkpoints in {ckpt_dir} (last: {stats['checkpoint'] or 'none'})", flush=True)
    if stats.get("eval"):
        print(f"hpcgpu: {eval_line(stats['eval'])}", flush=True)
    if loss is not None:
        print(f"final_loss={loss!r}", flush=True)  # exact repr: runs compare bit for bit


def eval_line(results: dict) -> str:
    """`eval at step 64: accuracy 0.9120, loss 0.3012 (1000 samples)`."""
    names = sorted(k for k in results if k not in ("samples", "step"))
    values = ", ".join(f"{n} {results[n]:.4f}" for n in names)
    return f"eval at step {results['step']}: {values} ({results['samples']} samples)"


def write_summary(run_dir: Path, stats: dict, world_size: int) -> Path:
    """`<run dir>/summary.json`: final_loss, steps, samples_per_s, wall_s and friends."""
    train_s = max(stats["train_s"], 1e-9)
    data = {"status": stats["status"], "final_loss": stats["final_loss"], "steps": stats["steps"],
            "epoch": stats["epoch"], "samples_per_s": stats["samples"] / train_s,
            "wall_s": stats["wall_s"], "train_s": stats["train_s"], "world_size": world_size,
            "checkpoint": stats["checkpoint"]}
    if stats.get("eval"):
        data["eval"] = stats["eval"]  # the last evaluation: {metric: mean, samples, step}
    return write_json(run_dir / "summary.json", data)


def write_json(path: Path, data: dict) -> Path:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def write_exit(run_dir: Path, rank: int, status: str, step: Optional[int] = None,
               checkpoint: Optional[str] = None, **extra) -> Path:
    """`<run dir>/exit/rank{R}.json`: how this rank ended, for the node agent and `hpcgpu status`."""
    data = {"status": status, "step": step, "checkpoint": checkpoint,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    return write_json(run_dir / "exit" / f"rank{rank}.json", data)
