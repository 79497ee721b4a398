"""How the Trainer spreads a model: DDP, FSDP2 (fully_shard) or DataParallel, and mixed precision."""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Iterable, Optional

import torch
from torch import nn

from hpcgpu.contract.errors import UserError
from hpcgpu.worker.rank import RankInfo


def scaled_lr(base: float, mode: str, world_size: int, grad_accum: int) -> float:
    """Scale lr with the number of samples per optimizer step: linear, sqrt or none."""
    factor = world_size * grad_accum
    return base * {"linear": factor, "sqrt": math.sqrt(factor), "none": 1}[mode]


def check_setup(strategy: str, precision: str, device: torch.device, info: RankInfo) -> None:
    """Refuse combinations that cannot work here, naming the spec key to change."""
    if precision != "fp32" and device.type != "cuda":
        raise UserError(
            f"train.precision {precision} needs CUDA GPUs; this rank runs on {device.type}",
            hint="set train.precision: fp32 for CPU runs",
        )
    if strategy == "dp" and info.world_size > 1:
        raise UserError(
            f"train.strategy dp runs one process that drives all local GPUs, but {info.world_size} ranks "
            "were started", hint="use train.strategy ddp for one rank per device",
        )


def autocast(precision: str, device: torch.device) -> ContextManager:
    """bf16/fp16 autocast on CUDA; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def wrap(model: nn.Module, strategy: str, device: torch.device,
         shard_units: Optional[Callable[[nn.Module], Iterable[nn.Module]]] = None) -> nn.Module:
    """Move the model to its device and wrap it for the strategy."""
    model = model.to(device)
    if strategy == "ddp":
        if not torch.distributed.is_initialized():
            return model  # a single process: DDP would add nothing
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in (shard_units(model) if shard_units else ()):
            fully_shard(unit)
        fully_shard(model)
        return model
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        return nn.DataParallel(model)
    return model  # dp on a CPU or a single GPU: the plain model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP/DataParallel wrapper (FSDP2 wraps in place)."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def grad_sync(model: nn.Module, strategy: str, sync: bool) -> ContextManager:
    """Skip the gradient all-reduce on all but the last micro-step of an accumulation."""
    if strategy == "fsdp" and hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()
