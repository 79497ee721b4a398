"""A fake NVML at the library boundary: the pynvml functions the doctor calls, over fake GPUs.

Used by the unit tests (and handy for trying the doctor's output without GPUs).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from types import SimpleNamespace

GiB = 1 << 30
DiskUsage = namedtuple("DiskUsage", "total used free")  # what shutil.disk_usage returns


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError; `value` is NVML's return code, as pynvml's errors carry it."""

    def __init__(self, message: str, value: int | None = None):
        super().__init__(message)
        self.value = value


def no_permission() -> FakeNVMLError:
    """What NVML answers for a GPU a Slurm cgroup hides from the job (pynvml NVMLError_NoPermission)."""
    return FakeNVMLError("Insufficient Permissions", FakeNvml.NVML_ERROR_NO_PERMISSION)


def not_supported() -> FakeNVMLError:
    return FakeNVMLError("Not Supported", FakeNvml.NVML_ERROR_NOT_SUPPORTED)


@dataclass
class FakeGpu:
    """One GPU as NVML would describe it."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total: int = 80 * GiB
    memory_used: int = GiB // 2
    util: int | None = 0  # None: query not supported
    ecc_uncorrected: int | None = 0  # None: ECC not supported
    persistence: int = 1
    compute_mode: int = 0
    nvlinks_active: int = 18
    nvlink_slots: int = 18  # links NVML answers for; past these it raises
    accessible: bool = True  # False: another job's GPU behind a Slurm cgroup (every query denied)
    mig: bool = False  # MIG mode on (or, with a MIG- UUID, a MIG instance): no utilisation


@dataclass
class FakeNvml:
    """The subset of pynvml the doctor uses; handles are GPU indices."""

    gpus: list[FakeGpu] = field(default_factory=list)
    driver: str = "550.54.15"
    cuda_driver: int = 12040
    init_error: str | None = None
    topology: dict[tuple[int, int], int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    NVMLError = FakeNVMLError
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_COMPUTEMODE_DEFAULT = 0
    NVML_COMPUTEMODE_EXCLUSIVE_THREAD = 1
    NVML_COMPUTEMODE_PROHIBITED = 2
    NVML_COMPUTEMODE_EXCLUSIVE_PROCESS = 3
    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_TOPOLOGY_INTERNAL = 0
    NVML_TOPOLOGY_SINGLE = 10
    NVML_TOPOLOGY_MULTIPLE = 20
    NVML_TOPOLOGY_HOSTBRIDGE = 30
    NVML_TOPOLOGY_NODE = 40
    NVML_TOPOLOGY_SYSTEM = 50
    NVML_NVLINK_MAX_LINKS = 36
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_GPU_IS_LOST = 15
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        for i, g in enumerate(self.gpus):
            if g.uuid == uuid:
                return i
        raise FakeNVMLError("Not Found", self.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceIsMigDeviceHandle(self, h: int) -> bool:
        """A FakeGpu whose UUID starts with MIG- stands for one MIG instance."""
        return self.gpu(h).uuid.startswith("MIG-")

    def gpu(self, h: int) -> FakeGpu:
        """The GPU behind a handle, as a query sees it: denied when the job does not hold it."""
        if not self.gpus[h].accessible:
            raise no_permission()
        return self.gpus[h]

    def nvmlDeviceGetName(self, h: int) -> str:
        return self.gpu(h).name

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.gpu(h).uuid

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        g = self.gpu(h)
        return SimpleNamespace(total=g.memory_total, used=g.memory_used,
                               free=g.memory_total - g.memory_used)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda_driver

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        g = self.gpu(h)
        if g.util is None or g.mig:
            raise not_supported()
        return SimpleNamespace(gpu=g.util, memory=0)

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        """[current, pending] mode."""
        mode = int(self.gpu(h).mig)
        return [mode, mode]

    def nvmlDeviceGetTotalEccErrors(self, h: int, error_type: int, counter: int) -> int:
        assert (error_type, counter) == (1, 0), "the doctor reads volatile uncorrected errors"
        if self.gpu(h).ecc_uncorrected is None:
            raise not_supported()
        return self.gpus[h].ecc_uncorrected

    def nvmlDeviceGetPersistenceMode(self, h: int) -> int:
        return self.gpu(h).persistence

    def nvmlDeviceGetComputeMode(self, h: int) -> int:
        return self.gpu(h).compute_mode

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        g = self.gpu(h)
        if link >= g.nvlink_slots:
            raise FakeNVMLError("Not Supported" if not g.nvlink_slots else "Invalid Argument")
        return int(link < g.nvlinks_active)

    def nvmlDeviceGetTopologyCommonAncestor(self, h1: int, h2: int) -> int:
        key = (min(h1, h2), max(h1, h2))
        both_nvlinked = self.gpu(h1).nvlinks_active and self.gpu(h2).nvlinks_active
        return self.topology.get(key, self.NVML_TOPOLOGY_SYSTEM if not both_nvlinked
                                 else self.NVML_TOPOLOGY_NODE)


def h100s(n: int = 2, **overrides: object) -> list[FakeGpu]:
    """n H100 SXM GPUs with distinct UUIDs; overrides apply to every one."""
    return [FakeGpu(uuid=f"GPU-{i:08x}-aaaa-bbbb-cccc-{i:012x}", **overrides)  # type: ignore[arg-type]
            for i in range(n)]


def pcie_gpu(name: str = "NVIDIA L40S", memory_gib: int = 48, index: int = 9) -> FakeGpu:
    """A PCIe card without NVLink."""
    return FakeGpu(name=name, uuid=f"GPU-{index:08x}-dddd-eeee-ffff-{index:012x}",
                   memory_total=memory_gib * GiB, nvlinks_active=0, nvlink_slots=0)


CPU_TORCH = {"version": "2.13.0+cpu", "cuda": None, "cudnn": None, "nccl": None,
             "cuda_available": False, "device_count": 0, "distributed": True, "gloo": True,
             "nccl_backend": False}
CUDA_TORCH = {"version": "2.13.0+cu128", "cuda": "12.8", "cudnn": 91002, "nccl": "2.27.3",
              "cuda_available": True, "device_count": 2, "distributed": True, "gloo": True,
              "nccl_backend": True}


def _no_command(argv: object, timeout: float = 0, env: object = None) -> object:
    raise AssertionError(f"unexpected command in a unit test: {argv}")


def fake_probe(root: object, **overrides: object):
    """A Probe that touches nothing real: no GPU, CPU torch, plenty of disk, no tools on PATH."""
    from pathlib import Path

    from hpcgpu.doctor.probe import Probe

    defaults: dict[str, object] = dict(
        env={}, root=Path(str(root)), which=lambda name: None, run=_no_command,
        nvml=FakeNvml(init_error="NVML Shared Library Not Found"),
        torch_loader=lambda: dict(CPU_TORCH),
        disk_usage=lambda path: DiskUsage(500 * GiB, 100 * GiB, 400 * GiB),
        memlock=lambda: -1, hostname=lambda: "gpu01", resolve=lambda host: "10.0.0.11",
        bind=lambda host, port: port or 41000, python=("3.11.7", "/usr/bin/python3"),
        checkpoint_dir=Path(str(root)) / "runs")
    defaults.update(overrides)
    return Probe(**defaults)  # type: ignore[arg-type]
