"""An in-process Trainer rig: one process, no process group, CPU, a model whose loss is known exactly.

`context` builds the WorkerContext a rank would have (any rank/world size: without a process group the
Trainer makes no collective calls, so a "rank 1 of 2" runs here too). `ConstTask` is a model whose
output is one parameter `b` for every sample, on zero targets: the MSE loss of any batch is b**2, so
the numbers a test expects are literals. `Clock` makes each optimizer step take STEP_S seconds of the
Trainer's clock, so throughput numbers are exact too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch.utils.data import TensorDataset

from hpcgpu.contract.specview import SpecView
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import WorkerContext
from hpcgpu.worker.progress import Progress
from hpcgpu.worker.rank import RankInfo
from hpcgpu.worker.task import Task
from tests.helpers.plans import plan_for

STEP_S = 0.25  # seconds of the Trainer's clock per optimizer step (Clock)
CLOCK_AT_0 = 100.0  # the clock's reading before the first step (perf_counter has no fixed zero)


class Const(torch.nn.Module):
    """Predicts the parameter b for every sample, whatever the input."""

    def __init__(self, b: float = 0.5):
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor([b]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(x.shape[0], 1)


def _frozen_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The MSE's value with a zero gradient."""
    return torch.nn.functional.mse_loss(output.detach(), target) + 0.0 * output.sum()


def const_task(samples: int = 32, b: float = 0.5, frozen: bool = True, flops: Optional[float] = None,
               optimizer: Any = "sgd", lr_schedule: Any = None) -> Task:
    """Zero targets: every batch's MSE loss is b**2. frozen: the loss has a zero gradient, so b never
    moves whatever the optimizer and lr. optimizer "sgd": plain SGD with the Trainer's lr."""
    data = TensorDataset(torch.arange(samples, dtype=torch.float32).unsqueeze(1), torch.zeros(samples, 1))
    if optimizer == "sgd":
        optimizer = (lambda params, lr: torch.optim.SGD(params, lr=lr))
    loss = _frozen_mse if frozen else torch.nn.functional.mse_loss
    return Task(model=lambda: Const(b), dataset=data, loss=loss, optimizer=optimizer,
                lr_schedule=lr_schedule, flops_per_sample=flops)


def spec_text(train: Optional[dict] = None, checkpoint: Optional[dict] = None, logging: Optional[dict] = None,
              distributed: Optional[dict] = None, entry: Optional[dict] = None) -> str:
    data = {"train": {"lr": 0.1, "lr_scaling": "none", "epochs": 1, "log_every": 1000, **(train or {})},
            "logging": {"tensorboard": False, "progress": "off", **(logging or {})},
            "checkpoint": {"every_steps": 1000, **(checkpoint or {})}}
    if distributed:
        data["distributed"] = distributed
    if entry:
        data["entry"] = entry
    return yaml.safe_dump(data)


def context(tmp_path: Path, name: str, rank: int = 0, world_size: int = 1, console_tty: bool = False,
            **sections: Any) -> WorkerContext:
    run_dir = tmp_path / name
    plan = plan_for(spec_text(**sections), run_id=name, run_dir=str(run_dir))
    return WorkerContext(info=RankInfo(rank, rank, world_size, world_size, 0, "single"),
                         spec=SpecView(plan.spec_data()), run_dir=run_dir, ckpt_dir=run_dir / "checkpoints",
                         plan=plan, resolved=True, device=torch.device("cpu"), console_tty=console_tty)


class Clock:
    """The Trainer's `time` module: perf_counter() advances STEP_S seconds per optimizer step done
    (a resumed Trainer's clock jumps when it restores its step: the time before the first step
    trained is not training time)."""

    def __init__(self) -> None:
        self.trainer: Any = None

    def perf_counter(self) -> float:
        return CLOCK_AT_0 + (self.trainer.step if self.trainer is not None else 0) * STEP_S


class RecordingMetrics:
    """Stands in for the Trainer's Metrics: remembers how it was made and what was logged."""

    made: list = []

    def __init__(self, run_dir, enabled, device, start_step=0, setup=None):
        self.args = {"run_dir": run_dir, "enabled": enabled, "device": device, "start_step": start_step}
        self.setup = setup
        self.logged: list = []
        self.finished: list = []
        self.closed = None
        RecordingMetrics.made.append(self)

    def log(self, step, scalars):
        self.logged.append((step, dict(scalars)))

    def finish(self, params, final, step):
        self.finished.append((params, dict(final), step))

    def close(self, status="done"):
        self.closed = status


class RecordingProgress(Progress):
    """The real Progress, remembering every update (step, epoch, loss, lr, rate)."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates: list = []
        RecordingProgress.made.append(self)

    def update(self, step, epoch, loss=None, lr=None, samples_per_s=None):
        self.updates.append((step, epoch, loss, lr, samples_per_s))
        super().update(step, epoch, loss, lr, samples_per_s)


def rig(monkeypatch) -> Clock:
    """Install the clock and the recorders into the trainer module (monkeypatch undoes it)."""
    clock = Clock()
    RecordingMetrics.made, RecordingProgress.made = [], []
    monkeypatch.setattr(trainer_mod, "time", clock)
    monkeypatch.setattr(trainer_mod, "Metrics", RecordingMetrics)
    monkeypatch.setattr(trainer_mod, "Progress", RecordingProgress)
    return clock


def fit(ctx: WorkerContext, task: Task, clock: Optional[Clock] = None) -> trainer_mod.Trainer:
    trainer = trainer_mod.Trainer(ctx, task)
    if clock is not None:
        clock.trainer = trainer
    trainer.outcome = trainer.fit()
    return trainer
