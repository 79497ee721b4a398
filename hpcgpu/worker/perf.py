"""Speed on GPUs: the TF32 switch, and model FLOPs utilisation (MFU) against the GPU's datasheet peak."""

from __future__ import annotations

from typing import Optional

import torch

# Dense tensor-core peaks per GPU in TFLOP/s: (bf16 = fp16, tf32). NVIDIA's datasheets print the
# "with sparsity" figure (2:4 structured sparsity, which training does not use) with an asterisk;
# the dense peak is half of it. Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM: BF16 1,979*,
# TF32 989*; PCIe: 1,513*, 756*; NVL: 1,671*, 835*), NVIDIA H200 Tensor Core GPU datasheet (SXM:
# 1,979*, 989*; NVL: 1,671*, 835*), NVIDIA A100 datasheet (BF16 312 | 624*, TF32 156 | 312*, SXM and
# PCIe alike), NVIDIA L40S datasheet (BF16 362.05 | 733*, TF32 183 | 366*), NVIDIA L4 datasheet
# (BF16 242*, TF32 120*), NVIDIA A10 datasheet (BF16 125 | 250*, TF32 62.5 | 125*).
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H100 SXM": (989.5, 494.5),
    "H100 PCIe": (756.5, 378.0),
    "H100 NVL": (835.5, 417.5),
    "H200 SXM": (989.5, 494.5),
    "H200 NVL": (835.5, 417.5),
    "A100 SXM": (312.0, 156.0),
    "A100 PCIe": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
}


def gpu_model(device_name: str) -> Optional[str]:
    """The PEAK_TFLOPS key for a torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3",
    "NVIDIA A100-SXM4-80GB", "NVIDIA H200 NVL"); None for a GPU not in the table."""
    tokens = set(device_name.upper().replace("-", " ").replace("_", " ").split()) - {"NVIDIA"}
    # whole tokens, so that GH200, H20 or A10G never pass for H200 or A10
    for chip in ("H100", "H200"):
        if chip in tokens:
            if "NVL" in tokens:
                return f"{chip} NVL"
            if "PCIE" in tokens:
                return f"{chip} PCIe" if chip == "H100" else None
            return f"{chip} SXM"  # the SXM parts report "H100 80GB HBM3" or plain "H200"
    if "A100" in tokens:
        return "A100 PCIe" if "PCIE" in tokens else "A100 SXM"
    for chip in ("L40S", "L4", "A10"):
        if chip in tokens:
            return chip
    return None


def peak_flops(device_name: str, precision: str, tf32: bool) -> Optional[float]:
    """Dense peak FLOP/s of one GPU for the run's matmul precision; None when unknown (fp32 without
    TF32 runs on the CUDA cores, whose peak the table does not keep)."""
    model = gpu_model(device_name)
    if model is None:
        return None
    half, tf32_peak = PEAK_TFLOPS[model]
    if precision in ("bf16", "fp16"):
        return half * 1e12
    return tf32_peak * 1e12 if tf32 else None


def mfu(flops_per_s: float, peak_per_device: float, devices: int) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of all devices that ran."""
    return flops_per_s / (peak_per_device * devices)


def throughput_scalars(samples_per_s: float, flops_per_sample: Optional[float],
                       peak_per_device: Optional[float], devices: int) -> dict[str, float]:
    """TensorBoard scalars for the FLOPs achieved: train/tflops when the task gives its FLOPs per
    sample, and train/mfu when the GPU's peak is known too."""
    if not flops_per_sample:
        return {}
    flops = flops_per_sample * samples_per_s
    out = {"train/tflops": flops / 1e12}
    if peak_per_device:
        out["train/mfu"] = mfu(flops, peak_per_device, devices)
    return out


def use_tf32(on: bool, device: torch.device) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (train.tf32). PyTorch leaves matmuls in full
    fp32 by default, which wastes most of an Ampere+ GPU; CPU runs are left alone (their results
    must not change)."""
    if device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on
