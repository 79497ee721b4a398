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
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            f"train.precision fp16 needs CUDA GPUs; this rank runs on {device.type}",
            hint="set train.precision: bf16 (autocast works on CPUs) or fp32 for CPU runs",
        )
    if strategy == "dp" and info.world_size > 1:
        raise UserError(
            f"train.strategy dp runs one process that drives all local GPUs, but {info.world_size} ranks "
            "were started", hint="use train.strategy ddp for one rank per device",
        )
    if strategy == "dp" and precision == "bf16":
        # DataParallel runs each replica's forward in a thread of its own and hands it autocast's
        # on/off flag only; autocast's dtype is per thread, so the replicas would compute in fp16
        # (autocast's CUDA default), silently and without a GradScaler. Refused rather than patched.
        raise UserError(
            "train.strategy dp with train.precision bf16 would run the replicas in fp16 without a gradient "
            "scaler (DataParallel's replica threads do not inherit autocast's dtype)",
            hint="use train.strategy ddp (one rank per GPU, faster than dp anyway), or train.precision fp16/fp32 with dp",
        )


def dp_device_ids(device: torch.device, planned_gpus: Optional[int], visible: int) -> list[int]:
    """The GPUs DataParallel drives: the plan's count starting at this rank's device (the plan gives
    dp's one process the first of the node's GPUs); without a plan, every visible GPU from there."""
    if device.type != "cuda":
        return []
    first = device.index or 0
    count = visible - first if planned_gpus is None else planned_gpus
    if first + count > visible:
        raise UserError(f"train.strategy dp is planned for {count} GPU(s) from cuda:{first}, "
                        f"but this node has {visible}", hint="plan the run for the GPUs the node has (--gpus N)")
    return list(range(first, first + max(count, 1)))


def data_replicas(strategy: str, device_ids: list[int]) -> int:
    """Model replicas one rank feeds per micro-step: the DataParallel GPUs, else 1. The loader batch
    and the lr scaling count them, as they count ranks under ddp."""
    return max(len(device_ids), 1) if strategy == "dp" else 1


def autocast(precision: str, device: torch.device) -> ContextManager:
    """bf16/fp16 autocast on the rank's device (bf16 only on CPUs); nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def fsdp_mp_policy(precision: str):
    """FSDP2's mixed precision: bf16 params for compute and all-gathers, gradients reduced in fp32
    (summing many ranks' bf16 gradients loses bits). None (fp32 everywhere) for fp32 and fp16: fp16
    params would need a sharded gradient scaler, so fp16 keeps fp32 params under autocast + GradScaler."""
    if precision != "bf16":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def _fully_shard(model: nn.Module, device: torch.device, precision: str,
                 shard_units: Optional[Callable[[nn.Module], Iterable[nn.Module]]]) -> nn.Module:
    """Shard the model where it was built (CPU): fully_shard moves each unit's parameters to the
    mesh's device as it shards them, so a GPU never holds more than one unsharded unit, never the
    whole model (model.to(device) first would, on every rank: out of memory exactly when FSDP is
    needed). Values do not depend on where sharding happens, so exact resume is unaffected."""
    from torch.distributed.fsdp import fully_shard

    kwargs = {}
    if torch.distributed.is_initialized():
        from torch.distributed.device_mesh import init_device_mesh

        # the mesh of this rank's device type: fully_shard's default takes the accelerator, a GPU
        # even for CPU ranks on a GPU machine
        kwargs["mesh"] = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    policy = fsdp_mp_policy(precision)
    if policy is not None:
        kwargs["mp_policy"] = policy
    for unit in (shard_units(model) if shard_units else ()):
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def wrap(model: nn.Module, strategy: str, device: torch.device,
         shard_units: Optional[Callable[[nn.Module], Iterable[nn.Module]]] = None,
         precision: str = "fp32", dp_devices: Optional[list[int]] = None) -> nn.Module:
    """Place the model on its device and wrap it for the strategy (fsdp: shard first, then place).
    dp_devices: the GPUs DataParallel drives (dp_device_ids); more than one wraps in DataParallel."""
    if strategy == "fsdp":
        return _fully_shard(model, device, precision, shard_units)
    model = model.to(device)
    if strategy == "ddp":
        if not torch.distributed.is_initialized():
            return model  # a single process: DDP would add nothing
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda" and dp_devices and len(dp_devices) > 1:
        # explicit device_ids: DataParallel's default is every visible GPU, not the planned ones
        return nn.DataParallel(model, device_ids=dp_devices, output_device=dp_devices[0])
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
