"""The shared training workload: one model, one dataset, one loss, for the Trainer and the hand loop.

Both sides of tiers 3, 4 and 9 build exactly these objects, and both record time at the same
point of every step (the loss call), so the comparison measures the loop around them, nothing else.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from hpcgpu.worker.task import Task


def build_model(dim: int, hidden: int, layers: int, classes: int) -> nn.Module:
    """An MLP big enough that compute, not Python, dominates a step (no dropout: same work every step)."""
    mods: list[nn.Module] = [nn.Linear(dim, hidden), nn.GELU()]
    for _ in range(layers - 1):
        mods += [nn.Linear(hidden, hidden), nn.GELU()]
    mods.append(nn.Linear(hidden, classes))
    return nn.Sequential(*mods)


def build_dataset(n_samples: int, dim: int, classes: int, seed: int = 1234) -> TensorDataset:
    """Gaussian inputs with random labels, from a private generator (identical on every rank)."""
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n_samples, dim, generator=gen),
                         torch.randint(0, classes, (n_samples,), generator=gen))


class TimedLoss:
    """Wraps a loss; records a timestamp at every call and writes them to `<dir>/rank<R>.json` at call `steps`.

    On a GPU the timestamps of the calls listed in `sync_at` (the first and last step of the measured
    window) are taken after a CUDA synchronize, so the window holds exactly that GPU work; the other steps
    are not synchronised, so a loop that lets the CPU run ahead keeps that advantage.
    """

    def __init__(self, loss: Callable, timing_dir: Optional[str], steps: Optional[int], sync_at: tuple = ()):
        self.loss, self.sync_at, self.steps, self.times = loss, set(sync_at), steps, []
        self.path = Path(timing_dir) / f"rank{os.environ.get('RANK', '0')}.json" if timing_dir else None

    def __call__(self, out, target):
        if len(self.times) in self.sync_at and torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        if self.path is not None and len(self.times) == self.steps:
            self.dump()  # at the last step, not at exit: the hpcgpu worker leaves by os._exit (no atexit)
        return self.loss(out, target)

    def dump(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"times": self.times, "threads": torch.get_num_threads()}))


def steady_rate(times: list[float], warmup: int) -> float:
    """Steps per second between the loss call of step `warmup` and the last one."""
    if len(times) < warmup + 2:
        raise ValueError(f"only {len(times)} steps recorded; need more than warmup={warmup} + 1")
    return (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def make_task(dim: int = 512, hidden: int = 1024, layers: int = 4, classes: int = 10,
              n_samples: int = 8192, timing_dir: Optional[str] = None, steps: Optional[int] = None) -> Task:
    """Task factory for the Trainer side (`entry.task: benchmarks.workload:make_task`)."""
    return Task(model=lambda: build_model(dim, hidden, layers, classes),
                dataset=build_dataset(n_samples, dim, classes),
                loss=TimedLoss(F.cross_entropy, timing_dir, steps))


def make_gpt_task(timing_dir: Optional[str] = None, sync_at: tuple = (), steps: Optional[int] = None,
                  **gpt_args) -> Task:
    """The bundled GPT task with a timed loss (GPU tier); `sync_at`, `steps`: see TimedLoss."""
    from hpcgpu.examples.gpt import make_task as gpt_task

    task = gpt_task(**gpt_args)
    task.loss = TimedLoss(task.loss, timing_dir, steps, tuple(sync_at))
    return task


class FirstStepStamp:
    """Wraps a loss; at its second call (the first optimizer step has ended) writes the wall-clock
    times of the first two calls and the host to `<dir>/rank<R>.json`. Wall clock, not perf_counter:
    tier 11 compares it with the time the submission started, in another process (same machine)."""

    def __init__(self, loss: Callable, timing_dir: str):
        self.loss, self.calls = loss, []
        self.path = Path(timing_dir) / f"rank{os.environ.get('RANK', '0')}.json"

    def __call__(self, out, target):
        self.calls.append(time.time())
        if len(self.calls) == 2:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"first_loss": self.calls[0], "first_step": self.calls[1],
                                             "host": os.uname().nodename}))
        return self.loss(out, target)


def make_demo_task(timing_dir: str, **demo_args) -> Task:
    """The bundled demo (`hpcgpu.examples.mlp`) with its loss stamped (tier 11: time to the first step)."""
    from hpcgpu.examples.mlp import make_task as demo_task

    task = demo_task(**demo_args)
    task.loss = FirstStepStamp(task.loss, timing_dir)
    return task
