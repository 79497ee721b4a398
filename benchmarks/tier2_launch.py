"""Tier 2: launch overhead. Time from process start to the end of the first training step of a 2-rank
gloo job, `hpcgpu run local --nproc 2 -- first_step.py` vs bare `torchrun --standalone` of the same script."""

from __future__ import annotations

import json
import statistics
import time

from benchmarks.harness import SCRIPTS, Bench, Stat, TierResult, compare, hpcgpu_cmd, interleave, run as run_cmd, torchrun_cmd

TITLE = "Launch overhead: time to the first step (2 ranks, gloo)"
SCRIPT = SCRIPTS / "first_step.py"


def _first_step(b: Bench, name: str, launcher: list[str], totals: list[float], phases: list[dict]) -> float:
    """Seconds from starting the launcher to the first step's end on the later of the two ranks."""
    cwd = b.workdir(f"tier2/{name}")
    out = cwd / "out"
    out.mkdir()
    t0 = time.time()
    run_cmd([*launcher, SCRIPT, out], b.env(), cwd, timeout=180)
    totals.append(time.time() - t0)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    phases.append({"to_rank_process": min(r["process_start"] for r in ranks) - t0,
                   "to_script": min(r["script_start"] for r in ranks) - t0,
                   "to_process_group": max(r["pg_up"] for r in ranks) - t0})
    return max(r["first_step"] for r in ranks) - t0


def _phases(phases: list[dict]) -> str:
    keys = ("to_rank_process", "to_script", "to_process_group")
    return ", ".join(f"{k.replace('_', ' ')} {statistics.median(p[k] for p in phases):.2f} s" for k in keys)


def run(b: Bench, result: TierResult) -> None:
    hp_cmd = [*hpcgpu_cmd(), "run", "local", "--nproc", "2", "--"]
    tr_cmd = torchrun_cmd(2)
    wall = {"hpcgpu": [], "torchrun": []}
    phases = {"hpcgpu": [], "torchrun": []}
    if not b.smoke:  # one unrecorded launch of each warms the page cache
        _first_step(b, "warm-hpcgpu", hp_cmd, [], [])
        _first_step(b, "warm-torchrun", tr_cmd, [], [])
    samples = interleave(b.reps, {
        name: (lambda name=name, cmd=cmd: _first_step(b, name, cmd, wall[name], phases[name]))
        for name, cmd in (("hpcgpu", hp_cmd), ("torchrun", tr_cmd))})
    note = (f"Median time from launch to: hpcgpu: {_phases(phases['hpcgpu'])}; "
            f"torchrun: {_phases(phases['torchrun'])} (rank process = the first rank's process start, from /proc; "
            "script = its first line; process group = init_process_group returned on both ranks).")
    result.figures.append(compare(
        "time to first step", Stat("hpcgpu run local", "s", samples["hpcgpu"]),
        Stat("torchrun --standalone", "s", samples["torchrun"]), "hpcgpu / torchrun", "<= 1.02", note=note))
    result.figures.append(compare(
        "launch to exit (whole job)", Stat("hpcgpu run local", "s", wall["hpcgpu"]),
        Stat("torchrun --standalone", "s", wall["torchrun"]), "hpcgpu / torchrun"))
