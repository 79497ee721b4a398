"""Data order: a resumed epoch yields exactly the batches an uninterrupted one would have."""

import pytest
import torch
from torch.utils.data import TensorDataset

from hpcgpu.worker.data import ResumableSampler, batches_per_epoch, make_loader

DATA = TensorDataset(torch.arange(100).float().unsqueeze(1), torch.arange(100))


def batches(rank: int, epoch: int, skip_batches: int, workers: int, batch: int = 8) -> list:
    sampler = ResumableSampler(DATA, num_replicas=2, rank=rank, seed=3)
    sampler.start_at(epoch, skip_batches * batch)
    return [y.tolist() for _, y in make_loader(DATA, sampler, batch, workers, seed=3)]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_replays_the_remaining_batches(workers):
    full = batches(rank=1, epoch=2, skip_batches=0, workers=0)
    assert batches(rank=1, epoch=2, skip_batches=4, workers=workers) == full[4:]


def test_order_depends_on_epoch_and_rank_only():
    assert batches(0, 0, 0, 0) == batches(0, 0, 0, 0)
    assert batches(0, 0, 0, 0) != batches(0, 1, 0, 0)
    seen = {i for r in (0, 1) for b in batches(r, 0, 0, 0) for i in b}
    assert len(seen) == 96  # 6 full batches of 8 per rank; drop_last keeps every rank in step


def test_batches_per_epoch_counts_full_batches():
    sampler = ResumableSampler(DATA, num_replicas=2, rank=0, seed=0)
    assert batches_per_epoch(sampler, 8) == 6
    sampler.start_at(0, 16)
    assert len(sampler) == 34 and batches_per_epoch(sampler, 8) == 6  # the epoch's size, not what is left
