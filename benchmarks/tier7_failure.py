"""Tier 7: failure detection. Rank 1 of a running 2-rank gloo job is killed with SIGKILL; seconds until
`hpcgpu run local` exits non-zero, vs bare torchrun on the same script."""

from __future__ import annotations

import os
import signal
import time

from benchmarks.harness import SCRIPTS, Bench, Stat, TierResult, compare, hpcgpu_cmd, interleave, kill_tree, start, torchrun_cmd, wait_for

TITLE = "Failure detection: SIGKILL of a rank -> launcher exits non-zero"


def _detect(b: Bench, name: str, launcher: list[str], codes: list) -> float:
    cwd = b.workdir(f"tier7/{name}")
    out = cwd / "out"
    out.mkdir()
    proc = start([*launcher, SCRIPTS / "victim.py", out], b.env(), cwd, cwd / "launcher.log")
    try:
        wait_for(lambda: (out / "pid1").exists() and (out / "pid0").exists() or proc.poll() is not None,
                 timeout=120, what=f"{name}: both ranks running")
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode} before the kill:\n{(cwd / 'launcher.log').read_text()[-2000:]}")
        time.sleep(0.5)  # a few steps in: steady state
        victim = int((out / "pid1").read_text())
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=300)
        seconds = time.perf_counter() - t0
    finally:
        kill_tree(proc)
    if proc.returncode == 0:
        raise RuntimeError(f"{name} exited 0 after a rank was killed")
    codes.append(proc.returncode)
    return seconds


def run(b: Bench, result: TierResult) -> None:
    codes = {"hpcgpu": [], "torchrun": []}
    cmds = {"hpcgpu": [*hpcgpu_cmd(), "run", "local", "--nproc", "2", "--"], "torchrun": torchrun_cmd(2)}
    samples = interleave(b.reps, {name: (lambda name=name: _detect(b, name, cmds[name], codes[name])) for name in cmds})
    result.figures.append(compare(
        "SIGKILL -> launcher exit", Stat("hpcgpu run local", "s", samples["hpcgpu"]),
        Stat("torchrun --standalone", "s", samples["torchrun"]), "hpcgpu / torchrun",
        note=f"exit statuses: hpcgpu {sorted(set(codes['hpcgpu']))}, torchrun {sorted(set(codes['torchrun']))}"))
