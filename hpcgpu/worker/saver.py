"""When and how rank 0 saves: synchronous, or async with only the CPU copy in the loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from hpcgpu.worker import checkpoint as ckpt
from hpcgpu.worker.state import snapshot


def _mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


class Checkpointer:
    """Saves state dicts as atomic step checkpoints on rank 0 and keeps the newest keep_last."""

    def __init__(self, ckpt_dir: Path, keep_last: int = 3, async_save: bool = False,
                 is_main: bool = True, report: ckpt.Report = print):
        self.dir, self.keep_last, self.async_save = Path(ckpt_dir), keep_last, async_save
        self.is_main, self.report = is_main, report
        self.last: Optional[Path] = None
        self.last_step: Optional[int] = None
        self.best: Optional[Path] = None  # checkpoint.keep_best's checkpoint: never pruned
        self.stall_s = 0.0  # how long the last save blocked the caller
        self._thread: Optional[threading.Thread] = None
        self._copy = None  # the last async save's snapshot, reused by the next one
        self._error: Optional[BaseException] = None

    def save(self, step: int, state: dict, meta: Optional[dict] = None) -> Optional[Path]:
        """Save `state` as checkpoint `step` (rank 0 only; other ranks return at once)."""
        self.last_step = step
        if not self.is_main:
            self.last = self.dir / ckpt.step_dir_name(step)  # rank 0 writes it
            return None
        self.wait()  # one write in flight at most, and in step order
        t0 = time.perf_counter()
        # Async needs a private copy (the loop keeps updating the tensors), made into the previous
        # save's copy when it fits (its write has ended: wait() above); sync only moves to CPU.
        snap = snapshot(state, copy=self.async_save, reuse=self._copy)
        if self.async_save:
            self._copy = snap
            self._thread = threading.Thread(target=self._write_in_background, args=(step, snap, meta or {}),
                                            name="hpcgpu-checkpoint")
            self._thread.start()
            self.stall_s = time.perf_counter() - t0
            return self.dir / ckpt.step_dir_name(step)
        path = self._write(step, snap, meta or {})
        self.stall_s = time.perf_counter() - t0
        return path

    def _write(self, step: int, snap: dict, meta: dict) -> Path:
        t0 = time.perf_counter()
        path = ckpt.save_state(self.dir, step, snap, meta)
        self.committed(path, step, time.perf_counter() - t0)
        return path

    def committed(self, path: Path, step: int, seconds: float) -> None:
        """Record a durable checkpoint, then prune older ones (never before: keep_last >= 2)."""
        self.last = path
        ckpt.prune(self.dir, self.keep_last, keep=path, best=self.best)
        self.report(f"hpcgpu: checkpoint step {step} -> {path} ({_mb(path):.1f} MB, {seconds:.2f} s)")

    def _write_in_background(self, step: int, snap: dict, meta: dict) -> None:
        self._run_keeping_error(lambda: self._write(step, snap, meta))

    def in_background(self, work) -> None:
        """Run `work` (the rest of a save) in the background thread that wait() joins; on every rank."""
        self._thread = threading.Thread(target=self._run_keeping_error, args=(work,), name="hpcgpu-checkpoint")
        self._thread.start()

    def _run_keeping_error(self, work) -> None:
        try:
            work()
        except BaseException as e:  # re-raised in the training thread by wait()
            self._error = e

    def wait(self) -> None:
        """Block until the write in flight (if any) is durable; raise if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise ckpt.CheckpointError(f"background checkpoint write failed: {err}") from err
