"""Helpers for the fault, load, bad- and hostile-input tests: real `hpcgpu` processes, HPCGPU_HOME in tmp.

Every run here goes through the real CLI in a subprocess (node agent, torch elastic, gloo ranks on
CPU), with HPCGPU_HOME and the run directories under pytest's tmp_path, so nothing leaks between
tests or into the user's state.
"""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[2]
#: the task factory that misbehaves on purpose (imported by the ranks through PYTHONPATH=REPO)
FAULTY_TASK = "tests.helpers.faulty_task:make_task"


def small_spec(**sections) -> dict:
    """A tiny, fast spec (the demo MLP on 256 samples); each keyword replaces keys of one section
    (`entry` is replaced whole)."""
    spec = {
        "name": "rel",
        "entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 256, "hidden": 32}},
        "train": {"batch_size": 8, "epochs": 1, "log_every": 2, "seed": 1},
        "checkpoint": {"every_steps": 5},
        "logging": {"tensorboard": False, "progress": "lines"},
    }
    for name, values in sections.items():
        merge = isinstance(values, dict) and name != "entry"  # an entry is replaced whole
        spec[name] = {**spec.get(name, {}), **values} if merge else values
    return spec


def faulty(fault: str, **task_args) -> dict:
    """An entry running faulty_task.make_task with the given fault."""
    return {"task": FAULTY_TASK, "task_args": {"n_samples": 256, "hidden": 32, "fault": fault, **task_args}}


def base_env(home: Path, extra: Optional[dict] = None) -> dict:
    """This environment minus HPCGPU_*/SLURM_* variables, with HPCGPU_HOME in tmp and the faulty task importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCGPU_", "SLURM_"))}
    env.update({"HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO)})
    env.update(extra or {})
    return env


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def hpcgpu(args: list, cwd: Path, env: Optional[dict] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m hpcgpu ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "hpcgpu", *map(str, args)], cwd=cwd,
                          env=env or base_env(cwd / "home"), capture_output=True, text=True, timeout=timeout)


@dataclass
class Started:
    """A `hpcgpu` process started in its own session (so a test can kill everything it left)."""

    proc: subprocess.Popen
    cwd: Path
    out_path: Path
    err_path: Path

    def wait(self, timeout: float = 120) -> "Finished":
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.proc)
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None
        return Finished(rc, self.out_path.read_text(errors="replace"), self.err_path.read_text(errors="replace"),
                        time.monotonic(), self.cwd)

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")


@dataclass
class Finished:
    rc: int
    stdout: str
    stderr: str
    ended: float  # time.monotonic() when the wait returned
    cwd: Path

    @property
    def text(self) -> str:
        return f"rc={self.rc}\n--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-6000:]}"

    def run_dir(self) -> Path:
        (found,) = [p for p in (self.cwd / "runs").iterdir() if p.is_dir()]
        return found


def start(args: list, cwd: Path, env: Optional[dict] = None, tag: str = "launcher") -> Started:
    out, err = cwd / f"{tag}.out", cwd / f"{tag}.err"
    proc = subprocess.Popen([sys.executable, "-m", "hpcgpu", *map(str, args)], cwd=cwd,
                            env=env or base_env(cwd / "home"), stdout=open(out, "wb"), stderr=open(err, "wb"),
                            start_new_session=True)
    return Started(proc, cwd, out, err)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the process group a test started (its own session: nothing else is in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_until(predicate: Callable[[], object], timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def rank_pids(run_dir: Path) -> dict[int, list[int]]:
    """rank -> every pid its log header named (one per attempt)."""
    out = {}
    for log in (run_dir / "logs").glob("rank*.log"):
        rank = int(re.search(r"rank(\d+)\.log", log.name).group(1))
        out[rank] = [int(p) for p in re.findall(r"^==== hpcgpu rank .* pid (\d+) ", log.read_text(), re.M)]
    return out


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def process_tree(root: int) -> list[int]:
    """root and all its descendants (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*") if Path(f"/proc/{pid}").exists() else []:
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found
