"""Rank-0 progress: a live bar on a terminal, plain periodic lines in a log file."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def choose_mode(setting: str, console_tty: bool) -> str:
    """bar | lines | off: `auto` and `bar` draw a bar only when the agent's console is a terminal."""
    if setting == "off":
        return "off"
    return "bar" if setting in ("auto", "bar") and console_tty else "lines"


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Shows step, loss, lr and throughput; `message` prints a line without breaking the bar."""

    def __init__(self, mode: str, total_steps: int, log_every: int, start_step: int = 0,
                 stream: Optional[TextIO] = None):
        self.mode, self.total, self.log_every = mode, total_steps, log_every
        self.stream = stream or sys.stdout
        self.start_step, self.t0 = start_step, time.perf_counter()
        self._last_draw = 0.0
        self._on_bar = False
        self.loss: Optional[float] = None
        self.lr: Optional[float] = None
        self.samples_per_s: Optional[float] = None

    def update(self, step: int, epoch: int, loss: Optional[float] = None, lr: Optional[float] = None,
               samples_per_s: Optional[float] = None) -> None:
        """Called every step on rank 0; loss/lr/rate are given on logging steps only (no device sync)."""
        if loss is not None:
            self.loss, self.lr, self.samples_per_s = loss, lr, samples_per_s
        if self.mode == "bar":
            now = time.perf_counter()
            if now - self._last_draw >= 0.2 or step == self.total:
                self._last_draw = now
                self._draw(step, epoch, now)
        elif self.mode == "lines" and loss is not None:
            self._write(f"step {step}/{self.total} epoch {epoch} {self._stats()}\n")

    def _stats(self) -> str:
        if self.loss is None:
            return ""
        rate = f" {self.samples_per_s:,.0f} samples/s" if self.samples_per_s else ""
        return f"loss {self.loss:.4f} lr {self.lr:.3g}{rate}"

    def _draw(self, step: int, epoch: int, now: float) -> None:
        done = step / max(self.total, 1)
        width = 24
        bar = "#" * int(done * width) + "." * (width - int(done * width))
        elapsed = now - self.t0
        steps_done = step - self.start_step
        eta = _eta(elapsed / steps_done * (self.total - step)) if steps_done > 0 else "?"
        self._write(f"\r[{bar}] {step}/{self.total} ep {epoch} {self._stats()} eta {eta}  ")
        self._on_bar = True

    def message(self, text: str) -> None:
        """Print a whole line (checkpoint saved, resumed from ...)."""
        if self._on_bar:
            self._write("\n")
            self._on_bar = False
        self._write(text + "\n")

    def close(self) -> None:
        """End the bar's line."""
        if self._on_bar:
            self._write("\n")
            self._on_bar = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
