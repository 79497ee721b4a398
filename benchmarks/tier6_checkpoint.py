"""Tier 6: checkpoint. Save throughput of hpcgpu's atomic save path (Checkpointer: torch.save + SHA-256 +
fsync + manifest + rename + prune) vs a raw write+fsync of the same bytes in the same directory; and the
stall of an async save (the training loop waits only for the copy) vs a synchronous save."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from benchmarks.harness import Bench, Stat, TierResult, compare, interleave

TITLE = "Checkpoint: save throughput vs raw write+fsync; async stall vs sync save"
MIB = 1 << 20


def _state(total_mib: int) -> dict:
    """A model-like state dict: 16 float32 tensors (plus a few plain values)."""
    import torch

    n = max(total_mib * MIB // 4 // 16, 1)
    gen = torch.Generator().manual_seed(0)
    return {"model": {f"layer{i}.weight": torch.randn(n, generator=gen) for i in range(16)},
            "step": 100, "note": "bench"}


def _tensors(state: dict) -> list:
    return list(state["model"].values())


def _raw_write(directory: Path, tensors: list) -> float:
    """Seconds to write the tensors' bytes to one new file and fsync it (then remove it)."""
    path = directory / "raw.bin"
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for t in tensors:
            f.write(memoryview(t.numpy()).cast("B"))
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


def run(b: Bench, result: TierResult) -> None:
    from hpcgpu.worker.saver import Checkpointer

    total_mib = 8 if b.smoke else 256
    state = _state(total_mib)
    nbytes = sum(t.numel() * t.element_size() for t in _tensors(state))
    directory = b.workdir("tier6")
    step = [0]
    sizes = []

    def saver(async_save: bool, ckpt_dir: Path) -> Checkpointer:
        return Checkpointer(ckpt_dir, keep_last=2, async_save=async_save, is_main=True, report=lambda s: None)

    def sync_save() -> float:
        step[0] += 1
        ck = saver(False, directory / "sync")
        t0 = time.perf_counter()
        path = ck.save(step[0], state)
        seconds = time.perf_counter() - t0
        sizes.append((path / "state.pt").stat().st_size)
        shutil.rmtree(directory / "sync")
        return seconds

    async_total = []

    def async_stall() -> float:
        step[0] += 1
        ck = saver(True, directory / "async")
        t0 = time.perf_counter()
        ck.save(step[0], state)
        stall = time.perf_counter() - t0
        ck.wait()
        async_total.append(time.perf_counter() - t0)
        shutil.rmtree(directory / "async")
        return stall

    _raw_write(directory, _tensors(state))  # warm-up: allocate, first-touch
    times = interleave(b.reps, {"raw": lambda: _raw_write(directory, _tensors(state)),
                                "sync": sync_save, "async": async_stall})
    file_bytes = sizes[0]
    gbps = lambda secs, n: [n / s / 1e9 for s in secs]  # noqa: E731
    result.figures.append(compare(
        f"save throughput ({total_mib} MiB state)", Stat("hpcgpu Checkpointer.save", "GB/s", gbps(times["sync"], file_bytes)),
        Stat("raw write+fsync", "GB/s", gbps(times["raw"], nbytes)), "hpcgpu / raw",
        note=f"state.pt is {file_bytes / MIB:.1f} MiB for {nbytes / MIB:.0f} MiB of tensors; throughput counts the "
             f"file's bytes. Directory: a temporary one under benchmarks/results/tmp (the repo's file system)."))
    result.figures.append(compare(
        "async save stall vs sync save", Stat("async stall", "s", times["async"]), Stat("sync save", "s", times["sync"]),
        "async stall / sync save",
        note=f"async stall = time save() blocks the loop (CPU snapshot copy); the background write then took "
             f"{sorted(async_total)[len(async_total) // 2]:.2f} s end to end (median). Stall throughput "
             f"{nbytes / sorted(times['async'])[len(times['async']) // 2] / 1e9:.3g} GB/s."))
