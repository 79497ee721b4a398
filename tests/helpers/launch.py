"""Start runs for tests: through `hpcgpu run local` (the real node agent) or plain torchrun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import yaml

from hpcgpu.contract import envnames
from hpcgpu.host.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]


def demo_spec(**sections: dict) -> dict:
    """A small, fast spec for the bundled MLP demo; each keyword replaces keys of one section."""
    spec = {
        "name": "test",
        "entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 1024}},
        "train": {"batch_size": 16, "epochs": 2, "log_every": 4, "seed": 7},
        "checkpoint": {"every_steps": 10, "keep_last": 3},
        "logging": {"tensorboard": False, "progress": "lines"},
    }
    for name, values in sections.items():
        spec[name] = {**spec.get(name, {}), **values} if isinstance(values, dict) else values
    return spec


def write_spec(run_dir: Path, spec: dict) -> Path:
    """Validate and write the spec as the run's spec.yaml."""
    text = yaml.safe_dump(spec, sort_keys=False)
    parse_spec(text, "test spec")  # fail in the test, not in the ranks
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "spec.yaml"
    path.write_text(text)
    return path


def worker_env(base: Path, spec_path: Path, extra: Optional[dict] = None, agent: bool = False) -> dict:
    """The environment; without the agent (plain torchrun), the HPCGPU_* variables it would set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCGPU_", "SLURM_"))}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", envnames.HOME: str(base / "home")})
    if not agent:
        env.update({envnames.RUN_DIR: str(base), envnames.SPEC_FILE: str(spec_path),
                    envnames.CKPT_DIR: str(base / "checkpoints")})
    env.update(extra or {})
    return env


def start(base: Path, spec: dict, nproc: int = 2, env: Optional[dict] = None,
          launcher: str = "hpcgpu") -> "Launch":
    """Start a run in its own session: `hpcgpu run local` (the real agent) or plain torchrun.

    Checkpoints go to `<base>/checkpoints` either way, so a second launch resumes the first.
    """
    base.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "checkpoint": {**spec.get("checkpoint", {}), "dir": str(base / "checkpoints")},
            "logging": {**spec.get("logging", {}), "dir": str(base / "runs")}}
    spec_path = write_spec(base, spec)
    if launcher == "hpcgpu":
        cmd = [sys.executable, "-m", "hpcgpu", "run", "local", "--nproc", str(nproc), "-f", str(spec_path)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "hpcgpu.worker"]
    before = set((base / "runs").iterdir()) if (base / "runs").is_dir() else set()
    out = open(base / "launcher.log", "ab")
    proc = subprocess.Popen(cmd, cwd=base, env=worker_env(base, spec_path, env, launcher == "hpcgpu"), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return Launch(proc, base, launcher, before)


@dataclass
class Launch:
    """A started run."""

    proc: subprocess.Popen
    base: Path
    launcher: str
    old_runs: set

    def run_dir(self, timeout: float = 60) -> Path:
        """This launch's run directory (torchrun: the base dir; hpcgpu: the new dir under runs/)."""
        if self.launcher != "hpcgpu":
            return self.base
        found: list = []

        def appeared() -> bool:
            runs = self.base / "runs"
            found[:] = [p for p in runs.iterdir() if p.is_dir() and p not in self.old_runs] if runs.is_dir() else []
            return bool(found)

        wait_until(appeared, timeout, "the run directory")
        return found[0]

    def wait(self, timeout: float = 120) -> "Result":
        """Wait for the run to end; kill its whole session on timeout."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(Result(-9, self.run_dir(1), self.base).explain()) from None
        return Result(rc, self.run_dir(5), self.base)


@dataclass
class Result:
    """What a finished launch left behind."""

    rc: int
    run_dir: Path
    base: Path

    def log(self, rank: int = 0) -> str:
        path = self.run_dir / "logs" / f"rank{rank}.log"
        return path.read_text() if path.exists() else ""

    def exit_record(self, rank: int = 0) -> dict:
        return json.loads((self.run_dir / "exit" / f"rank{rank}.json").read_text())

    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    @property
    def final_loss(self) -> Optional[str]:
        found = re.findall(r"^final_loss=(\S+)$", self.log(0), re.M)
        return found[-1] if found else None

    def explain(self) -> str:
        """Everything useful for an assertion message."""
        launcher = self.base / "launcher.log"
        parts = [f"rc={self.rc}", "--- launcher ---", launcher.read_text()[-3000:] if launcher.exists() else ""]
        for rank in range(2):
            parts += [f"--- rank{rank}.log ---", self.log(rank)[-4000:]]
        return "\n".join(parts)


def run(base: Path, spec: dict, nproc: int = 2, env: Optional[dict] = None, launcher: str = "hpcgpu",
        timeout: float = 120) -> Result:
    """Launch and wait."""
    return start(base, spec, nproc, env, launcher).wait(timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll predicate every 20 ms until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def rank_pid(run_dir: Path, rank: int) -> int:
    """The pid from the newest header line of a rank's log."""
    pids = re.findall(r"^==== hpcgpu rank .* pid (\d+) ", (run_dir / "logs" / f"rank{rank}.log").read_text(), re.M)
    return int(pids[-1])


def logged_step(run_dir: Path, rank: int = 0) -> int:
    """The last step a rank's progress lines reported (0 before the first)."""
    path = run_dir / "logs" / f"rank{rank}.log"
    steps = re.findall(r"^step (\d+)/", path.read_text(), re.M) if path.exists() else []
    return int(steps[-1]) if steps else 0
