"""FSDP in one process on the CPU: a one-rank gloo group, so the Trainer shards the model with FSDP2
and saves and resumes sharded checkpoints (docs/checkpointing.md: `shards/` with each rank's DCP
shard, `state.pt` with the replicated trainer state, model and optimizer in `shards/`).
(Two real ranks under torchrun: tests/worker/test_trainer.py, slow.)"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from hpcgpu.contract.checkpoints import read_manifest
from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker import stop
from hpcgpu.worker import trainer as trainer_mod
from hpcgpu.worker.context import resolve_resume
from tests.helpers.trainer_rig import const_task, context, rig

# 16 samples, batch 4, one rank: 4 steps per epoch; b is trained (frozen=False) by SGD with momentum,
# so a resume must restore both the model's shard and the optimizer's
TRAIN = {"strategy": "fsdp", "batch_size": 4, "epochs": 1, "seed": 3}


@pytest.fixture
def one_rank_group(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    tdist.destroy_process_group()


def run(tmp_path, monkeypatch, name, stop_at=None, resume=False, **ctx_args):
    rig(monkeypatch)
    trainer = None
    monkeypatch.setattr(stop, "should_stop", lambda device=None: trainer is not None and trainer.step == stop_at)
    ctx = context(tmp_path, name, train=TRAIN, distributed={"stop_check_every": 1}, **ctx_args)
    if resume:
        resolve_resume(ctx, {})
    task = const_task(samples=16, b=1.0, frozen=False,
                      optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9))
    trainer = trainer_mod.Trainer(ctx, task)
    trainer.outcome = trainer.fit()
    return trainer


def b_of(trainer) -> float:
    (b,) = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in trainer.model.parameters()]
    return b.item()


def test_an_fsdp_checkpoint_keeps_model_and_optimizer_in_its_shards_not_in_state_pt(tmp_path, monkeypatch,
                                                                                      one_rank_group):
    run(tmp_path, monkeypatch, "f", stop_at=2)
    step = tmp_path / "f" / "checkpoints" / "step_00000002"
    assert read_manifest(step)["kind"] == "fsdp"
    assert (step / "shards" / ".metadata").is_file() and list((step / "shards").glob("__0_*.distcp"))
    state = ckpt.load_state(step)
    assert state["model"] is None and state["optimizer"] is None
    assert state["progress"]["step"] == 2


def test_an_fsdp_run_stopped_and_resumed_ends_bit_identical_to_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                                   one_rank_group):
    whole = run(tmp_path, monkeypatch, "whole")
    stopped = run(tmp_path, monkeypatch, "parts", stop_at=2)
    assert (stopped.outcome.status, stopped.outcome.step) == ("stopped", 2)
    assert b_of(stopped) != b_of(whole)
    resumed = run(tmp_path, monkeypatch, "parts", resume=True)
    assert (resumed.start_step, resumed.outcome.status, resumed.outcome.step) == (2, "done", 4)
    assert b_of(resumed) == b_of(whole)  # the model's shard and the momentum buffer's were both restored
    assert resumed.outcome.final_loss == whole.outcome.final_loss


def test_an_async_fsdp_save_runs_on_a_gloo_group_of_its_own_not_the_training_group(tmp_path, monkeypatch,
                                                                                    one_rank_group):
    from hpcgpu.worker import checkpoint_dcp

    groups = []
    real = checkpoint_dcp.save_sharded

    def spy(*args, **kwargs):
        groups.append(args[6] if len(args) > 6 else kwargs.get("async_group"))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_dcp, "save_sharded", spy)
    t = run(tmp_path, monkeypatch, "async", checkpoint={"async_save": True})
    assert t.outcome.checkpoint.endswith("step_00000004")
    assert read_manifest(tmp_path / "async" / "checkpoints" / "step_00000004")["kind"] == "fsdp"
    (group,) = groups
    assert group is not None and group is not tdist.group.WORLD
    assert tdist.get_backend(group) == "gloo"
