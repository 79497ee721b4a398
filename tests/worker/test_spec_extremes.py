"""The spec's numeric bounds are below every overflow in the ranks: the largest seed, epoch, rank and
timeout the spec accepts go through the very torch and numpy calls the worker makes. Literal numbers:
the bounds are not read from the spec, so a wrong bound there fails here."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as tdist
from torch.utils.data import TensorDataset

from hpcgpu.worker.data import ResumableSampler, make_loader
from hpcgpu.worker.state import seed_everything

DATA = TensorDataset(torch.arange(16).float().unsqueeze(1), torch.arange(16))


@pytest.mark.parametrize("seed", [4_294_967_295, -4_294_967_295])
def test_the_extreme_seeds_seed_every_generator_the_worker_uses(seed):
    seed_everything(seed + 4095)  # the Trainer seeds seed + rank
    sampler = ResumableSampler(DATA, num_replicas=4096, rank=4095, seed=seed)
    sampler.start_at(1_000_000_000, 0)  # train.epochs at most 1e9
    assert len(list(make_loader(DATA, sampler, 1, 0, seed=seed))) == 1


def test_the_longest_collective_timeout_reaches_c10d(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1,
                             timeout=timedelta(seconds=604_800))  # distributed.timeout_s at most a week
    try:
        t = torch.ones(1)
        tdist.all_reduce(t)
        assert t.item() == 1.0
    finally:
        tdist.destroy_process_group()
