"""How many GPUs this process may use, without importing torch (NVML creates no CUDA context)."""

from __future__ import annotations

from typing import Mapping


def count_visible_gpus(environ: Mapping[str, str]) -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else NVML's count, else 0."""
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        ids = [x for x in cvd.split(",") if x.strip() and x.strip() != "-1"]
        if not ids or cvd.strip().startswith("-1"):
            return 0
    try:
        import pynvml  # from nvidia-ml-py; cheap, and no CUDA context is created

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0
    return min(count, len(ids)) if cvd is not None else count
