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


def _settle() -> bool:
    """sync, then drop the page cache if allowed; whether it was dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def _spread(values: list[float]) -> str:
    return f"{min(values):.3g}-{max(values):.3g}"


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

    # one Checkpointer for every async save, as in training: from the second save on it copies into
    # the previous save's snapshot (the first, unrecorded, allocates it)
    async_ck = saver(True, directory / "async")

    def async_stall() -> float:
        step[0] += 1
        t0 = time.perf_counter()
        async_ck.save(step[0], state)
        stall = time.perf_counter() - t0
        async_ck.wait()
        async_total.append(time.perf_counter() - t0)
        return stall

    buffers = [t.clone() for t in _tensors(state)]

    def copy_floor() -> float:
        """The floor of any snapshot: copying the tensors into memory that already exists."""
        t0 = time.perf_counter()
        for buf, t in zip(buffers, _tensors(state)):
            buf.copy_(t)
        return time.perf_counter() - t0

    _raw_write(directory, _tensors(state))  # warm-up: allocate, first-touch
    async_stall()
    async_total.clear()
    dropped = []

    def settled(sample):
        """Each sample starts from the same state: earlier writes flushed, the page cache dropped
        (where this process may: root on Linux), so no sample pays for another's dirty pages."""
        def run() -> float:
            dropped.append(_settle())
            return sample()
        return run

    times = interleave(b.reps, {"raw": settled(lambda: _raw_write(directory, _tensors(state))),
                                "sync": settled(sync_save), "async": settled(async_stall),
                                "floor": settled(copy_floor)})
    file_bytes = sizes[0]
    gbps = lambda secs, n: [n / s / 1e9 for s in secs]  # noqa: E731
    cache = ("the page cache was dropped before every sample" if all(dropped) else
             "the page cache could not be dropped here (not root): samples may share cached pages")
    pairs = [gbps([s], file_bytes)[0] / gbps([r], nbytes)[0] for s, r in zip(times["sync"], times["raw"])]
    stalls = [a / s for a, s in zip(times["async"], times["sync"])]
    result.figures.append(compare(
        f"save throughput ({total_mib} MiB state)", Stat("hpcgpu Checkpointer.save", "GB/s", gbps(times["sync"], file_bytes)),
        Stat("raw write+fsync", "GB/s", gbps(times["raw"], nbytes)), "hpcgpu / raw", ">= 0.8",
        note=f"state.pt is {file_bytes / MIB:.1f} MiB for {nbytes / MIB:.0f} MiB of tensors; throughput counts the "
             f"file's bytes. Directory: a temporary one under benchmarks/results/tmp (the repo's file system). "
             f"Samples interleaved raw, save, async; {cache}. Per-repetition ratio spread {_spread(pairs)}."))
    result.figures.append(compare(
        "async save stall vs sync save", Stat("async stall", "s", times["async"]), Stat("sync save", "s", times["sync"]),
        "async stall / sync save", "<= 0.1",
        note=f"Per-repetition ratio spread {_spread(stalls)}. async stall = time save() blocks the loop (CPU snapshot copy); the background write then took "
             f"{sorted(async_total)[len(async_total) // 2]:.2f} s end to end (median). Stall throughput "
             f"{nbytes / sorted(times['async'])[len(times['async']) // 2] / 1e9:.3g} GB/s."))
    result.figures.append(compare(
        "async save stall vs the copy floor", Stat("async stall", "s", times["async"]),
        Stat("copy into existing memory", "s", times["floor"]), "async stall / copy",
        note="The floor: copy_ of the same tensors into tensors that already exist (no allocation, no page "
             "faults), one thread. The stall adds walking the state and starting the writer thread."))
