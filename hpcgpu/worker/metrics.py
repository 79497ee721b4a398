"""Rank-0 metrics: TensorBoard scalars, plus GPU utilisation and memory from NVML on GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch


class GpuMonitor:
    """NVML readings for one CUDA device; quietly does nothing without GPUs or pynvml."""

    def __init__(self, device: torch.device):
        self.handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml  # from nvidia-ml-py; imported here so CPU runs never need it

            pynvml.nvmlInit()
            # By UUID, because CUDA_VISIBLE_DEVICES renumbers devices but NVML does not.
            uuid = "GPU-" + str(torch.cuda.get_device_properties(device).uuid)
            self.handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            self.nvml = pynvml
        except Exception:  # no driver, no library, an old driver: metrics are optional
            self.handle = None

    def read(self) -> dict[str, float]:
        """{'gpu/util_pct', 'gpu/mem_used_gb'} or {} when unavailable."""
        if self.handle is None:
            return {}
        try:
            util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            mem = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
        except Exception:
            return {}
        return {"gpu/util_pct": float(util), "gpu/mem_used_gb": float(mem)}


class Metrics:
    """TensorBoard writer on rank 0 (to `<run dir>/tb`); a no-op elsewhere or when disabled."""

    def __init__(self, run_dir: Path, enabled: bool, device: torch.device, start_step: int = 0):
        self.writer = None
        self.gpu = GpuMonitor(device) if enabled else None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but a trimmed image may lack it
            return
        # purge_step drops events a killed attempt wrote after the checkpoint we resume from.
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)

    def log(self, step: int, scalars: dict[str, Optional[float]]) -> None:
        """Write scalars (and GPU readings) at this step."""
        if self.writer is None:
            return
        values = {**scalars, **(self.gpu.read() if self.gpu else {})}
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
