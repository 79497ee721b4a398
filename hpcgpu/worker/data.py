"""Data order that survives a restart: a DistributedSampler that can start mid-epoch, seeded loaders."""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch can start after the first `skip` samples of this rank.

    The order is a pure function of (seed, epoch), so skipping by index replays exactly the
    samples an uninterrupted run would have drawn next, with any number of loader workers.
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def start_at(self, epoch: int, skip: int) -> None:
        """Begin `epoch` after `skip` samples of this rank (0: from the start)."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; python and numpy follow from it.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Any, sampler: ResumableSampler, batch_size: int, num_workers: int,
                seed: int, pin_memory: bool = False) -> DataLoader:
    """A loader for the sampler's current epoch, seeded by (seed, epoch, rank) only."""
    # An explicit generator keeps the loader from drawing its worker seed from the global RNG,
    # which would make a resumed run's RNG stream differ from an uninterrupted one.
    gen = torch.Generator()
    gen.manual_seed(seed * 1_000_003 + sampler.epoch * 1009 + sampler.rank)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
        generator=gen, worker_init_fn=_seed_worker if num_workers else None, pin_memory=pin_memory,
        persistent_workers=False,
    )


def batches_per_epoch(sampler: ResumableSampler, batch_size: int) -> int:
    """Full batches of one whole epoch on this rank (the same on every rank)."""
    return sampler.num_samples // batch_size
