"""The Trainer's step arithmetic, in one process (no process group): accumulation divides the loss,
the learning rate scales as documented, the step count and the epoch boundary are exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.contract.specview import SpecView
from hpcgpu.worker.context import WorkerContext
from hpcgpu.worker.rank import RankInfo
from hpcgpu.worker.task import Task
from hpcgpu.worker.trainer import Trainer
from tests.helpers.plans import plan_for


def task(samples: int = 64) -> Task:
    gen = torch.Generator().manual_seed(7)
    data = TensorDataset(torch.randn(samples, 4, generator=gen), torch.randn(samples, 1, generator=gen))
    return Task(model=lambda: torch.nn.Linear(4, 1), dataset=data, loss=torch.nn.functional.mse_loss,
                optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr))


def train(tmp_path: Path, name: str, **train: object) -> Trainer:
    settings = {"lr": 0.1, "lr_scaling": "none", "epochs": 1, "log_every": 1000, **train}
    text = ("train: {" + ", ".join(f"{k}: {v}" for k, v in settings.items()) + "}\n"
            "logging: {tensorboard: false, progress: 'off'}\ncheckpoint: {every_steps: 1000}\n")
    run_dir = tmp_path / name
    plan = plan_for(text, run_id=name, run_dir=str(run_dir))
    ctx = WorkerContext(info=RankInfo(0, 0, 1, 1, 0, "single"), spec=SpecView(plan.spec_data()), run_dir=run_dir,
                        ckpt_dir=run_dir / "checkpoints", plan=plan, resolved=True, device=torch.device("cpu"))
    trainer = Trainer(ctx, task())
    trainer.outcome = trainer.fit()
    return trainer


def weights(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_two_micro_batches_of_four_step_like_one_batch_of_eight(tmp_path):
    accumulated = train(tmp_path, "accum", batch_size=4, grad_accum=2)
    whole = train(tmp_path, "whole", batch_size=8, grad_accum=1)
    assert accumulated.step == whole.step == 8  # 64 samples / 8 per step
    assert torch.allclose(weights(accumulated), weights(whole), atol=1e-6)
    assert accumulated.outcome.final_loss == pytest.approx(whole.outcome.final_loss, rel=1e-5)


def test_linear_and_sqrt_scaling_multiply_by_world_size_times_accumulation(tmp_path):
    assert train(tmp_path, "lin", batch_size=4, grad_accum=4, lr_scaling="linear").lr == pytest.approx(0.4)
    assert train(tmp_path, "sqrt", batch_size=4, grad_accum=4, lr_scaling="sqrt").lr == pytest.approx(0.2)
    assert train(tmp_path, "none", batch_size=4, grad_accum=4, lr_scaling="none").lr == pytest.approx(0.1)


def test_steps_epochs_and_max_steps(tmp_path):
    two = train(tmp_path, "two", batch_size=8, epochs=2)
    assert (two.step, two.epoch, two.batch_in_epoch, two.total_steps) == (16, 2, 0, 16)
    capped = train(tmp_path, "cap", batch_size=8, epochs=2, max_steps=5)
    assert (capped.step, capped.epoch, capped.batch_in_epoch) == (5, 0, 5)
    # the last step is always saved, and only it here (every_steps is larger than the run)
    assert sorted(p.name for p in (tmp_path / "cap" / "checkpoints").glob("step_*")) == ["step_00000005"]


def test_a_dataset_smaller_than_one_step_is_a_user_error(tmp_path):
    from hpcgpu.contract.errors import UserError

    with pytest.raises(UserError, match="fewer than one optimizer step"):
        train(tmp_path, "tiny", batch_size=64, grad_accum=2)
