"""The Trainer's gradient scaler (train.precision fp16: docs/checkpointing.md lists the scaler in the
checkpoint, "the fp16 gradient scaler, when used", and the Trainer restores it on resume).

fp16 runs only on CUDA (check_setup refuses it on CPUs), but what the Trainer does with the scaler
(scale the loss, step and update through it, save and restore its state) does not depend on the
device, and torch's GradScaler runs on CPUs: so a CPU GradScaler stands in for the fp16 one here."""

from __future__ import annotations

import pytest
import torch

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import resolve_resume
from tests.helpers.trainer_rig import const_task, context, rig

TRAIN = {"batch_size": 4, "epochs": 1, "seed": 5}  # 16 samples: 4 steps


def run(tmp_path, monkeypatch, name, task, stop_at=None, resume=False):
    rig(monkeypatch)
    monkeypatch.setattr(trainer_mod, "grad_scaler", lambda precision, device: torch.amp.GradScaler("cpu"))
    trainer = None
    monkeypatch.setattr(stop, "should_stop", lambda device=None: trainer is not None and trainer.step == stop_at)
    ctx = context(tmp_path, name, train=TRAIN, distributed={"stop_check_every": 1})
    if resume:
        resolve_resume(ctx, {})
    trainer = trainer_mod.Trainer(ctx, task)
    trainer.outcome = trainer.fit()
    return trainer


def test_the_step_is_taken_through_the_scaler_with_the_unscaled_gradient(tmp_path, monkeypatch):
    # one SGD step (lr 0.1) on the loss b**2 at b = 0.5: the gradient 2b = 1.0 moves b to 0.4, exactly
    # as without a scaler (the loss is scaled up for backward, the gradients scaled back before the step)
    task = const_task(samples=4, b=0.5, frozen=False)
    t = run(tmp_path, monkeypatch, "one", task)
    assert t.outcome.step == 1
    assert t.model.b.item() == pytest.approx(0.4)
    assert t.scaler.state_dict()["_growth_tracker"] == 1  # the scaler saw the step: one finite step counted


def test_the_checkpoint_holds_the_scalers_state(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, "saved", const_task(samples=16), stop_at=2)
    scaler = ckpt.load_state(tmp_path / "saved" / "checkpoints" / "step_00000002")["scaler"]
    # GradScaler's defaults: scale 2**16, grown every 2000 finite steps; 2 finite steps counted so far
    assert scaler["scale"] == 65536.0 and scaler["growth_interval"] == 2000
    assert scaler["_growth_tracker"] == 2


def test_a_resume_restores_the_scalers_state(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch, "parts", const_task(samples=16), stop_at=2)
    t = run(tmp_path, monkeypatch, "parts", const_task(samples=16), resume=True)
    assert (t.start_step, t.outcome.step) == (2, 4)
    # the growth tracker went on from the checkpoint's 2: 4 finite steps in all, as in one attempt
    assert t.scaler.state_dict()["_growth_tracker"] == 4
    final = ckpt.load_state(tmp_path / "parts" / "checkpoints" / "step_00000004")["scaler"]
    assert final["_growth_tracker"] == 4
