"""The small common harness: settings, processes, timing, medians, and figures with their targets."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
BIN = Path(sys.executable).parent  # the venv's bin: hpcgpu, torchrun, accelerate live next to python


class Skip(Exception):
    """A tier that cannot run on this machine; the message says why."""


@dataclass
class Bench:
    """Settings every tier reads: smoke mode, repetitions, a scratch directory, the base environment."""

    smoke: bool
    reps: int
    scratch: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every launched job: one thread per rank, the repo importable, a private HPCGPU_HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCGPU_", "SLURM_", "TORCHELASTIC_"))}
        env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HPCGPU_HOME": str(self.scratch / "home"),
                    "PYTHONUNBUFFERED": "1"})
        env.update(extra)
        return env

    def workdir(self, name: str) -> Path:
        """A fresh directory under the scratch directory."""
        path = self.scratch / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


@dataclass
class Stat:
    """One measured quantity: its label, unit and every repetition (the median is what counts)."""

    label: str
    unit: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class Figure:
    """A measurement against its reference, as a ratio, with the issue's target when it sets one."""

    name: str
    measured: Stat
    reference: Optional[Stat]
    ratio: Optional[float]
    ratio_label: str = ""
    target: Optional[str] = None  # "<= 1.05" or ">= 0.97"
    note: str = ""

    @property
    def met(self) -> Optional[bool]:
        if self.target is None or self.ratio is None:
            return None
        op, bound = self.target.split()
        return self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)

    @property
    def margin(self) -> Optional[str]:
        """How far the ratio is from the target, in percent of the bound (negative: missed)."""
        if self.met is None:
            return None
        op, bound = self.target.split()
        b = float(bound)
        gap = (b - self.ratio) / b if op == "<=" else (self.ratio - b) / b
        return f"{gap * 100:+.1f}%"

    def to_json(self) -> dict:
        d = asdict(self)
        for side in ("measured", "reference"):
            if d[side] is not None:
                d[side]["median"] = statistics.median(d[side]["samples"])
        d.update(met=self.met, margin=self.margin)
        return d


def compare(name: str, measured: Stat, reference: Optional[Stat], ratio_label: str,
            target: Optional[str] = None, invert: bool = False, note: str = "") -> Figure:
    """Figure with ratio = measured/reference medians (reference/measured with invert=True)."""
    ratio = None
    if reference is not None:
        a, b = measured.median, reference.median
        ratio = (b / a if invert else a / b) if (b if not invert else a) else None
    return Figure(name, measured, reference, ratio, ratio_label, target, note)


@dataclass
class TierResult:
    """What one tier produced: figures, or why it was skipped or failed."""

    tier: int
    title: str
    status: str = "ok"  # ok | skipped | error
    figures: list[Figure] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"tier": self.tier, "title": self.title, "status": self.status, "note": self.note,
                "seconds": round(self.seconds, 1), "figures": [f.to_json() for f in self.figures]}


def interleave(reps: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each measurement `reps` times, alternating A B, B A, ... so drift and load hit all sides alike."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(reps):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(runs[name]())
    return out


def run(argv: list, env: dict, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion, output captured; raise with its output if it fails."""
    try:
        p = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{argv} timed out after {timeout} s\n{_tail(e.stdout)}{_tail(e.stderr)}") from None
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}\n{_tail(p.stdout)}{_tail(p.stderr)}")
    return p


def timed(argv: list, env: dict, cwd: Path, timeout: float = 300) -> float:
    """Wall seconds of one successful run of a command."""
    t0 = time.perf_counter()
    run(argv, env, cwd, timeout)
    return time.perf_counter() - t0


def start(argv: list, env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    """Start a command in its own session (so kill_tree reaches all of it), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen([str(a) for a in argv], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the session a started command leads (it and every process it started), then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll until predicate() is true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _tail(text, n: int = 3000) -> str:
    if not text:
        return ""
    text = text.decode(errors="replace") if isinstance(text, bytes) else text
    return text[-n:]


def hpcgpu_cmd() -> list[str]:
    """The hpcgpu console script a user runs (next to this Python)."""
    exe = BIN / "hpcgpu"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hpcgpu"]


def torchrun_cmd(nproc: int) -> list[str]:
    """Bare torchrun, standalone, `nproc` ranks on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
