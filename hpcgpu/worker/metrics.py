"""Rank-0 metrics: TensorBoard scalars, plus GPU utilisation and memory from NVML on GPUs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from hpcgpu.worker.tracking import TENSORBOARD, TrackerSetup, Trackers, open_trackers

MIG_NO_UTIL = "GPU utilisation is not available on MIG instances"


def handle_by_cuda_uuid(nvml: Any, uuid: str) -> Any:
    """NVML's handle for the device CUDA calls `uuid`: a whole GPU ('GPU-...') or a MIG slice ('MIG-...').

    By UUID, because CUDA_VISIBLE_DEVICES renumbers devices but NVML does not; on a MIG instance
    CUDA reports the instance's UUID, which NVML (driver R470+) knows with the MIG- prefix.
    """
    try:
        return nvml.nvmlDeviceGetHandleByUUID("GPU-" + uuid)
    except nvml.NVMLError:
        return nvml.nvmlDeviceGetHandleByUUID("MIG-" + uuid)


def is_mig(nvml: Any, handle: Any) -> bool:
    """Whether the handle is a MIG instance, or a GPU with MIG mode on (False when NVML cannot say)."""
    try:
        if nvml.nvmlDeviceIsMigDeviceHandle(handle):
            return True
        return nvml.nvmlDeviceGetMigMode(handle)[0] == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
    except Exception:  # noqa: BLE001 - pre-MIG GPUs and old drivers answer Not Supported
        return False


def gpu_readings(nvml: Any, handle: Any) -> tuple[dict[str, float], str]:
    """The scalars NVML answers for, and why utilisation is missing ('' when it was read).

    Each reading is separate: MIG answers NOT_SUPPORTED for utilisation, but memory still works.
    """
    values: dict[str, float] = {}
    missing = ""
    try:
        values["gpu/util_pct"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception as e:  # noqa: BLE001 - NVMLError_NotSupported and friends
        missing = MIG_NO_UTIL if is_mig(nvml, handle) else f"GPU utilisation is not available ({e})"
    try:
        values["gpu/mem_used_gb"] = float(nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**30)
    except Exception:  # noqa: BLE001 - metrics are optional
        pass
    return values, missing


class GpuMonitor:
    """NVML readings for one CUDA device; nothing without GPUs or pynvml, and says once what is missing."""

    def __init__(self, device: torch.device, say: Callable[[str], None] | None = None):
        self.handle: Any = None
        self.nvml: Any = None
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._said = False
        if device.type != "cuda":
            return
        try:
            import pynvml  # from nvidia-ml-py; imported here so CPU runs never need it

            pynvml.nvmlInit()
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            self.handle = handle_by_cuda_uuid(pynvml, uuid)
            self.nvml = pynvml
        except Exception:  # no driver, no library, an old driver: metrics are optional
            self.handle = None

    def read(self) -> dict[str, float]:
        """{'gpu/util_pct', 'gpu/mem_used_gb'}, those of them NVML answers, or {} without NVML."""
        if self.handle is None:
            return {}
        values, missing = gpu_readings(self.nvml, self.handle)
        if missing and not self._said:  # once per run, not once per logging step
            self.say(f"hpcgpu: {missing}: TensorBoard gets no gpu/util_pct")
            self._said = True
        return values


class Metrics:
    """Rank 0's metrics: each step's scalars (plus GPU readings) to the run's trackers; a no-op
    elsewhere or with no tracker (hpcgpu.worker.tracking)."""

    def __init__(self, run_dir: Path, enabled: bool, device: torch.device, start_step: int = 0,
                 setup: Optional[TrackerSetup] = None):
        self.trackers: Optional[Trackers] = None
        setup = setup or TrackerSetup(names=(TENSORBOARD,), run_id=run_dir.name, run_dir=run_dir)
        self.gpu = GpuMonitor(device) if enabled and setup.names else None
        if enabled and setup.names:
            setup.start_step = start_step
            self.trackers = open_trackers(setup)

    def log(self, step: int, scalars: dict[str, Optional[float]]) -> None:
        """Send scalars (and GPU readings) at this step."""
        if self.trackers is None:
            return
        self.trackers.log(step, {**scalars, **(self.gpu.read() if self.gpu else {})})

    def finish(self, params: dict[str, Any], final: dict[str, Optional[float]], step: int) -> None:
        """A finished run: its hyper-parameters with the final metrics (TensorBoard's HParams)."""
        if self.trackers is not None:
            self.trackers.hparams(params, final, step)

    def close(self, status: str = "done") -> None:
        """Flush and close every tracker; status: done, stopped or failed (MLflow's run status)."""
        if self.trackers is not None:
            self.trackers.close(status)
            self.trackers = None
