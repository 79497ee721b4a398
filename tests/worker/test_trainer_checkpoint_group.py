"""Only an asynchronous FSDP save gets a gloo group of its own (its collectives run in a background
thread, never on the training loop's group); every other run makes no extra process group, since a
new group is a collective every rank must join. A one-rank gloo group in this process stands for a
distributed run (async FSDP saves themselves: test_trainer_fsdp_inprocess.py)."""

from __future__ import annotations

import pytest
import torch.distributed as tdist

from hpcgpu.worker import trainer as trainer_mod
from tests.helpers.trainer_rig import const_task, context, rig


@pytest.fixture
def one_rank_group(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    tdist.destroy_process_group()


@pytest.mark.parametrize("strategy, async_save", [("ddp", True), ("ddp", False), ("fsdp", False)])
def test_no_checkpoint_group_unless_the_save_is_async_fsdp(tmp_path, monkeypatch, one_rank_group, strategy, async_save):
    rig(monkeypatch)
    made = []
    real_new_group = tdist.new_group
    monkeypatch.setattr(tdist, "new_group", lambda *a, **k: made.append(k) or real_new_group(*a, **k))
    ctx = context(tmp_path, "g", train={"strategy": strategy, "batch_size": 4, "epochs": 1},
                  checkpoint={"async_save": async_save})
    trainer = trainer_mod.Trainer(ctx, const_task(samples=16))
    trainer._build()
    assert trainer.ckpt_group is None and made == []


def test_an_async_fsdp_run_gets_one_gloo_group_for_its_saves(tmp_path, monkeypatch, one_rank_group):
    rig(monkeypatch)
    ctx = context(tmp_path, "g", train={"strategy": "fsdp", "batch_size": 4, "epochs": 1},
                  checkpoint={"async_save": True})
    trainer = trainer_mod.Trainer(ctx, const_task(samples=16))
    trainer._build()
    assert trainer.ckpt_group is not None and trainer.ckpt_group is not tdist.group.WORLD
    assert tdist.get_backend(trainer.ckpt_group) == "gloo"


def test_fsdp_shards_each_unit_the_task_names_then_the_whole_model(tmp_path, monkeypatch, one_rank_group):
    # Task.shard_units (docs/trainer.md): each unit becomes its own FSDP unit, so its parameters are
    # gathered one unit at a time; without them only the root would be one
    import dataclasses

    import torch
    from torch.distributed.fsdp import FSDPModule

    rig(monkeypatch)

    class TwoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(1, 4), torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.second(self.first(x))

    task = dataclasses.replace(const_task(samples=16), model=TwoLayers,
                               shard_units=lambda model: [model.first, model.second])
    ctx = context(tmp_path, "u", train={"strategy": "fsdp", "batch_size": 4, "epochs": 1})
    trainer = trainer_mod.Trainer(ctx, task)
    trainer._build()
    assert isinstance(trainer.model.first, FSDPModule) and isinstance(trainer.model.second, FSDPModule)
    assert isinstance(trainer.model, FSDPModule)
