"""Device choice, process-group start with an explicit timeout, and teardown."""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as tdist

from hpcgpu.contract.errors import UserError
from hpcgpu.worker.rank import RankInfo


def planned(device: str) -> torch.device:
    """The device the plan gave this rank; an error, never a fallback, when this node lacks it."""
    chosen = torch.device(device)
    if chosen.type == "cuda":
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= have:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise UserError(
                f"the plan gives this rank {device}, but this node has {have} usable GPU(s)"
                + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""),
                hint="plan the run for the GPUs the node has (--gpus N / --gpus-per-node N), or use --nproc N "
                     "for CPU ranks; with srun --gpus-per-task each rank sees only its own GPU",
            )
    return chosen


def pick_device(info: RankInfo) -> torch.device:
    """Without a plan (plain torchrun, srun, python): cuda:LOCAL_RANK when every local rank gets its
    own visible GPU, else the CPU."""
    # CUDA_VISIBLE_DEVICES is honoured by CUDA itself: index LOCAL_RANK counts visible devices only.
    if torch.cuda.is_available() and info.local_world_size <= torch.cuda.device_count():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def pick_backend(requested: str, device: torch.device) -> str:
    """`auto` -> nccl on GPUs, gloo on CPUs; an explicit choice is kept."""
    if requested != "auto":
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


def limit_cpu_threads(info: RankInfo) -> None:
    """Share the cores among the local ranks unless the user set OMP_NUM_THREADS."""
    # Without this every rank starts one thread per core and they thrash each other.
    if "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(info.local_world_size, 1)))


def init_distributed(info: RankInfo, backend: str = "auto", timeout_s: int = 600,
                     device_name: Optional[str] = None) -> torch.device:
    """Take the planned device (or pick one without a plan) and start the default process group
    (a no-op for a single process)."""
    device = planned(device_name) if device_name else pick_device(info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        limit_cpu_threads(info)
    if tdist.is_initialized():
        return device
    kwargs = {"backend": pick_backend(backend, device), "timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        # device_id binds the NCCL communicator to this GPU eagerly (torch >= 2.3).
        kwargs["device_id"] = device
    if info.world_size == 1 and "MASTER_ADDR" not in os.environ:
        # `python train.py`, no launcher: a group of one, so DDP, barriers and collectives work as
        # they do under a launcher; an in-memory store needs no port and no rendezvous
        kwargs.update(store=tdist.HashStore(), rank=0, world_size=1)
        atexit.register(teardown)
    elif info.source == "slurm":
        kwargs.update(init_method="env://", rank=info.rank, world_size=info.world_size)
    tdist.init_process_group(**kwargs)
    return device


def is_distributed() -> bool:
    """True when a process group is up."""
    return tdist.is_available() and tdist.is_initialized()


def barrier(device: Optional[torch.device] = None) -> None:
    """Wait for every rank (no-op without a process group)."""
    if not is_distributed():
        return
    if device is not None and device.type == "cuda":
        tdist.barrier(device_ids=[device.index])
    else:
        tdist.barrier()


def teardown() -> None:
    """Destroy the process group if one is up; safe to call twice."""
    if is_distributed():
        tdist.destroy_process_group()
