"""Python, torch, CUDA, cuDNN and NCCL versions, and whether they agree with the NVIDIA driver."""

from __future__ import annotations

from typing import Any

from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import CheckResult, Skip, check, fail, ok, skip, warn

MIN_PYTHON = (3, 10)
CUDA_WHEEL_HINT = ("install a CUDA build of torch matching the driver, e.g. "
                   "pip install torch --index-url https://download.pytorch.org/whl/cu128")


@check("python")
def check_python(p: Probe) -> CheckResult:
    """Python version (hpcgpu needs 3.10+) and interpreter path."""
    version, executable = p.python
    detail = f"{version} ({executable})"
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_PYTHON:
        return fail(detail, "hpcgpu needs Python 3.10 or newer: use a newer python or a venv")
    return ok(detail, {"version": version, "executable": executable})


def _torch(p: Probe) -> dict[str, Any]:
    info = p.torch_info()
    if "error" in info:
        raise Skip(f"torch not importable: {info['error']}")
    return info


@check("torch")
def check_torch(p: Probe) -> CheckResult:
    """torch imports, and has torch.distributed with a usable backend."""
    info = p.torch_info()
    if "error" in info:
        return fail(f"import torch failed: {info['error']}",
                    "pip install torch (a CUDA build on GPU machines, the CPU build elsewhere)")
    build = f"CUDA {info['cuda']} build" if info.get("cuda") else "CPU build"
    detail = f"{info['version']} ({build})"
    if not info.get("distributed"):
        return fail(f"{detail}: torch.distributed is not available",
                    "install an official torch wheel; this build lacks distributed support")
    return ok(detail, info)


def cuda_version(driver_int: int) -> str:
    """NVML's integer CUDA version (12040) as text ('12.4')."""
    return f"{driver_int // 1000}.{driver_int % 1000 // 10}"


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = (version.split(".") + ["0"])[:2]
    return int(major), int(minor)


@check("cuda")
def check_cuda(p: Probe) -> CheckResult:
    """torch's CUDA runtime against the highest CUDA version the installed driver supports."""
    info = _torch(p)
    gpus = p.gpu_count()
    if not info.get("cuda"):
        if gpus:
            return fail(f"torch {info['version']} is a CPU build but {gpus} GPU(s) are present",
                        CUDA_WHEEL_HINT)
        raise Skip("CPU build of torch and no GPU: training runs on CPU ranks with gloo")
    if not gpus:
        raise Skip(f"torch built for CUDA {info['cuda']} but no NVIDIA GPU/driver to compare with")
    driver = cuda_version(p.nvml.nvmlSystemGetCudaDriverVersion())
    detail = f"torch CUDA {info['cuda']}, driver supports CUDA {driver}"
    data = {"torch_cuda": info["cuda"], "driver_cuda": driver}
    need, have = _major_minor(info["cuda"]), _major_minor(driver)
    driver_hint = ("update the NVIDIA driver, or install a torch wheel built for CUDA "
                   f"{driver} or older (https://pytorch.org/get-started/previous-versions/)")
    if need[0] > have[0]:
        return fail(f"{detail}: the driver is too old for this torch", driver_hint, data)
    if not info.get("cuda_available"):
        return fail(f"{detail}, but torch.cuda.is_available() is False",
                    "check the driver install (nvidia-smi), /dev/nvidia* permissions and "
                    "CUDA_VISIBLE_DEVICES", data)
    if need > have:
        return warn(f"{detail}: runs only through CUDA minor-version compatibility", driver_hint, data)
    return ok(detail, data)


def cudnn_version(v: int) -> str:
    """torch.backends.cudnn.version() as text: 90100 -> '9.1.0', 8902 -> '8.9.2'."""
    if v >= 90000:
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
    return f"{v // 1000}.{v % 1000 // 100}.{v % 100}"


@check("cudnn")
def check_cudnn(p: Probe) -> CheckResult:
    """cuDNN bundled with torch (only matters on GPUs)."""
    info = _torch(p)
    if not info.get("cuda"):
        raise Skip("CPU build of torch: no cuDNN")
    if not info.get("cudnn"):
        return warn(f"torch CUDA {info['cuda']} build without a usable cuDNN",
                    "reinstall torch from the official wheel index (it bundles cuDNN)")
    return ok(f"cuDNN {cudnn_version(info['cudnn'])}", {"cudnn": info["cudnn"]})


@check("nccl")
def check_nccl(p: Probe) -> CheckResult:
    """NCCL bundled with torch: needed for GPU all-reduce."""
    info = _torch(p)
    if not info.get("cuda"):
        raise Skip("CPU build of torch: no NCCL (gloo is used on CPU)")
    if not info.get("nccl_backend") or not info.get("nccl"):
        if p.gpu_count():
            return fail("torch has no NCCL backend, multi-GPU training cannot use it",
                        "install the official Linux CUDA wheel of torch (it bundles NCCL)")
        return skip("torch has no NCCL backend and there is no GPU")
    return ok(f"NCCL {info['nccl']}", {"nccl": info["nccl"]})
