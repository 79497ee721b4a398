"""Tier 9 (GPU only; skipped without CUDA, never in CI): DDP world-size-1 step time vs the plain model;
bf16 Trainer vs a hand-written bf16 loop; MFU of the bundled GPT; async checkpoint stall vs D2H bandwidth.

HPCGPU_BENCH_TIER9_ON_CPU=1 runs the same code on the CPU (fp32, gloo, tiny sizes) to check the tier
itself works on a machine without a GPU; its figures mean nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import yaml

from benchmarks.harness import SCRIPTS, Bench, Skip, Stat, TierResult, compare, hpcgpu_cmd, interleave, run as run_cmd, torchrun_cmd
from benchmarks.workload import steady_rate

TITLE = "GPU: DDP world size 1, bf16 Trainer vs hand loop, GPT MFU, async checkpoint stall"
GIB = 1 << 30

# Dense bf16 peak FLOP/s (NVIDIA datasheets, without sparsity): the MFU denominator.
PEAK_BF16 = {"H200": 989.4e12, "H100 SXM": 989.4e12, "H100 NVL": 835.0e12, "H100 PCIe": 756.0e12,
             "A100": 312.0e12}


def peak_flops(device_name: str) -> tuple[str, float] | None:
    """(table key, peak bf16 FLOP/s) for a CUDA device name, or None when the table has no entry."""
    name = device_name.upper()
    if "H200" in name:
        return "H200", PEAK_BF16["H200"]
    if "H100" in name:
        key = "H100 PCIe" if "PCIE" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
        return key, PEAK_BF16[key]
    if "A100" in name:
        return "A100", PEAK_BF16["A100"]
    return None


def _sizes(b: Bench, on_gpu: bool) -> dict:
    if b.smoke or not on_gpu:
        return {"gpt": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "stride": 32},
                "batch_size": 4, "steps": 8, "warmup": 2, "ddp_steps": 3, "ckpt_mib": 32}
    # GPT-2-small shape at 1024 tokens: big enough that kernels, not Python, set the pace on an H100/H200.
    return {"gpt": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "stride": 32},
            "batch_size": 16, "steps": 80, "warmup": 15, "ddp_steps": 10, "ckpt_mib": 4096}


def run(b: Bench, result: TierResult) -> None:
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and os.environ.get("HPCGPU_BENCH_TIER9_ON_CPU") != "1":
        raise Skip("no CUDA device here: tier 9 runs only on a machine with an NVIDIA GPU.")
    sz = _sizes(b, on_gpu)
    _ddp_world1(b, result, sz, on_gpu)
    _trainer_vs_loop(b, result, sz, on_gpu)
    _async_stall(b, result, sz, on_gpu)
    dev = torch.cuda.get_device_name(0) if on_gpu else "CPU (validation run: figures are meaningless)"
    result.note = f"Device: {dev}. GPT config {sz['gpt']}, batch {sz['batch_size']} per step."


def _ddp_world1(b: Bench, result: TierResult, sz: dict, on_gpu: bool) -> None:
    cwd = b.workdir("tier9/ddp1")
    cfg = {"gpt": sz["gpt"], "batch_size": sz["batch_size"], "steps": sz["ddp_steps"], "repeats": b.reps,
           "out": str(cwd / "out.json")}
    run_cmd([*torchrun_cmd(1), SCRIPTS / "ddp_world1.py", json.dumps(cfg)], b.env(), cwd, timeout=600)
    t = json.loads((cwd / "out.json").read_text())
    result.figures.append(compare("DDP (world size 1) step time vs plain model",
                                  Stat("DDP", "s/step", t["ddp"]), Stat("plain model", "s/step", t["plain"]),
                                  "DDP / plain", note="bf16 autocast, AdamW; alternating rounds in one process"))


def _sync_at(sz: dict) -> list[int]:
    """CUDA-synchronised timestamps only at the measured window's ends (see workload.TimedLoss)."""
    return [sz["warmup"], sz["steps"] - 1]


def _gpt_spec(sz: dict, timing: str, on_gpu: bool) -> dict:
    return {"name": "bench-gpt",
            "entry": {"task": "benchmarks.workload:make_gpt_task",
                      "task_args": {**sz["gpt"], "timing_dir": timing, "sync_at": _sync_at(sz),
                                    "steps": sz["steps"]}},
            "train": {"batch_size": sz["batch_size"], "precision": "bf16" if on_gpu else "fp32", "lr": 3e-4,
                      "lr_scaling": "none", "epochs": 100_000, "max_steps": sz["steps"], "log_every": 10},
            "checkpoint": {"every_steps": 10_000_000, "resume": "never"},
            "logging": {"progress": "lines", "tensorboard": True}}


def _rate(timing_dir, warmup: int) -> float:
    return steady_rate(json.loads((timing_dir / "rank0.json").read_text())["times"], warmup)


def _trainer(b: Bench, sz: dict, on_gpu: bool) -> float:
    cwd = b.workdir("tier9/trainer")
    (cwd / "job.yaml").write_text(yaml.safe_dump(_gpt_spec(sz, str(cwd / "timing"), on_gpu)))
    devices = ["--gpus", "1"] if on_gpu else ["--nproc", "1"]
    run_cmd([*hpcgpu_cmd(), "run", "local", *devices, "-f", "job.yaml"], b.env(), cwd, timeout=600)
    return _rate(cwd / "timing", sz["warmup"])


def _hand_loop(b: Bench, sz: dict, on_gpu: bool) -> float:
    cwd = b.workdir("tier9/hand")
    cfg = {"gpt": sz["gpt"], "batch_size": sz["batch_size"], "steps": sz["steps"], "lr": 3e-4, "bf16": on_gpu,
           "timing_dir": str(cwd / "timing"), "sync_at": _sync_at(sz)}
    run_cmd([*torchrun_cmd(1), SCRIPTS / "gpt_loop.py", json.dumps(cfg)], b.env(), cwd, timeout=600)
    return _rate(cwd / "timing", sz["warmup"])


def _trainer_vs_loop(b: Bench, result: TierResult, sz: dict, on_gpu: bool) -> None:
    import torch

    from hpcgpu.examples.gpt import make_task

    reps = b.reps if b.smoke else max(3, b.reps - 2)
    s = interleave(reps, {"trainer": lambda: _trainer(b, sz, on_gpu), "hand": lambda: _hand_loop(b, sz, on_gpu)})
    result.figures.append(compare("bf16 Trainer steps/s vs hand-written bf16 loop",
                                  Stat("Trainer (hpcgpu run local --gpus 1)", "steps/s", s["trainer"]),
                                  Stat("hand-written loop (torchrun)", "steps/s", s["hand"]), "Trainer / hand loop",
                                  ">= 0.97", note="CUDA synchronised only at the measured window's first and last step, "
                                                  "on both sides: per-step syncs inside a loop count against it"))
    flops_per_step = make_task(**sz["gpt"]).flops_per_sample * sz["batch_size"]
    achieved = [r * flops_per_step / 1e12 for r in s["trainer"]]
    peak = peak_flops(torch.cuda.get_device_name(0)) if on_gpu else ("CPU placeholder", 1e12)
    if peak is None:
        result.note += f" No peak FLOP/s known for {torch.cuda.get_device_name(0)}: MFU left out."
        return
    result.figures.append(compare(
        "GPT MFU (Trainer, bf16)", Stat("achieved", "TFLOP/s", achieved), Stat(f"{peak[0]} bf16 dense peak", "TFLOP/s",
                                                                                 [peak[1] / 1e12]),
        "MFU", note=f"FLOPs per step {flops_per_step:.3g} (6N + attention, hpcgpu.examples.gpt.flops_per_token); "
                    f"peaks used: {', '.join(f'{k} {v / 1e12:.0f}' for k, v in PEAK_BF16.items())} TFLOP/s"))


def _async_stall(b: Bench, result: TierResult, sz: dict, on_gpu: bool) -> None:
    import torch

    from hpcgpu.worker.saver import Checkpointer

    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    n = sz["ckpt_mib"] * (1 << 20) // 4 // 16
    state = {"model": {f"w{i}": torch.randn(n, device=device) for i in range(16)}}
    tensors = list(state["model"].values())
    nbytes = sum(t.numel() * 4 for t in tensors)
    pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=on_gpu) for t in tensors]
    directory = b.workdir("tier9/ckpt")
    step = [0]

    def stall() -> float:
        step[0] += 1
        ck = Checkpointer(directory, keep_last=2, async_save=True, is_main=True, report=lambda s: None)
        t0 = time.perf_counter()
        ck.save(step[0], state)
        seconds = time.perf_counter() - t0
        ck.wait()
        return nbytes / seconds / 1e9

    def d2h() -> float:
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for src, dst in zip(tensors, pinned):
            dst.copy_(src, non_blocking=True)
        if on_gpu:
            torch.cuda.synchronize()
        return nbytes / (time.perf_counter() - t0) / 1e9

    d2h()
    s = interleave(b.reps, {"stall": stall, "d2h": d2h})
    result.figures.append(compare(
        f"async checkpoint stall ({nbytes / GIB:.2f} GiB on the GPU)", Stat("async save stall", "GB/s", s["stall"]),
        Stat("D2H copy to pinned memory", "GB/s", s["d2h"]), "stall GB/s / D2H GB/s",
        note=f"stall = bytes / time Checkpointer.save(async_save=True) blocks the loop; median stall "
             f"{nbytes / statistics.median(s['stall']) / 1e9:.2f} s"))
