"""Tier 8: Slurm submit-to-RUNNING. Seconds from starting `hpcgpu submit slurm` until squeue shows the job
RUNNING, vs plain `sbatch` of an equivalent batch script, on the local cluster (`make slurm-up`).

The plain script asks for what hpcgpu's submission asked for: its #SBATCH resource lines are copied from
the batch script hpcgpu (submitit) wrote in the run directory of an unrecorded first submission.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import yaml

from benchmarks.harness import Bench, Skip, Stat, TierResult, compare, hpcgpu_cmd, interleave, run as run_cmd, wait_for
from benchmarks.slurmjobs import check_available, finish, job_id_of, job_state, wait_idle

TITLE = "Slurm: submit -> RUNNING, `hpcgpu submit slurm` vs plain sbatch"
POLL_S = 0.05
# Lines of hpcgpu's batch script that say where output goes or what the job is called: set per script.
_PER_SCRIPT = re.compile(r"#SBATCH\s+--(output|error|job-name|open-mode|chdir)\b")
FALLBACK_SBATCH = ["#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"]


def _until_running(t0: float, job_id: str) -> float:
    wait_for(lambda: job_state(job_id) == "RUNNING", 120, f"job {job_id} to be RUNNING", interval=POLL_S)
    return time.perf_counter() - t0


def _hpcgpu_submit(b: Bench, cwd: Path, sbatch_lines: list, returned: dict) -> float:
    name = f"bhp{uuid.uuid4().hex[:8]}"
    (cwd / "sleep.py").write_text("import time\ntime.sleep(600)\n")
    spec = {"name": name, "entry": {"script": "sleep.py"},
            "resources": {"nodes": 1, "gpus_per_node": 0, "procs_per_node": 1}, "logging": {"tensorboard": False}}
    (cwd / "job.yaml").write_text(yaml.safe_dump(spec))
    wait_idle()
    t0 = time.perf_counter()
    p = run_cmd([*hpcgpu_cmd(), "submit", "slurm", "-f", "job.yaml"], b.env(), cwd, timeout=120)
    returned["hpcgpu"].append(time.perf_counter() - t0)
    job_id = job_id_of(p.stdout, name)
    if not job_id:
        raise RuntimeError(f"no job id in the output of hpcgpu submit slurm:\n{p.stdout[-1500:]}")
    try:
        seconds = _until_running(t0, job_id)
    finally:
        finish(job_id)
    if not sbatch_lines:
        sbatch_lines.extend(_sbatch_lines_of(cwd))
    return seconds


def _sbatch_lines_of(cwd: Path) -> list[str]:
    """The resource #SBATCH lines of the batch script hpcgpu's submission wrote (newest one under cwd)."""
    scripts = sorted(cwd.rglob("*.sh"), key=lambda p: p.stat().st_mtime)
    for script in reversed(scripts):
        lines = [ln.strip() for ln in script.read_text().splitlines() if ln.startswith("#SBATCH")]
        if lines:
            return [ln for ln in lines if not _PER_SCRIPT.match(ln)]
    return []


def _plain_sbatch(cwd: Path, sbatch_lines: list[str], returned: dict) -> float:
    name = f"bpl{uuid.uuid4().hex[:8]}"
    script = cwd / "plain.sh"
    script.write_text("\n".join(["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={cwd}/plain-%j.out",
                                 *(sbatch_lines or FALLBACK_SBATCH), "srun sleep 600", ""]))
    wait_idle()
    t0 = time.perf_counter()
    p = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=60, cwd=cwd)
    returned["sbatch"].append(time.perf_counter() - t0)
    if p.returncode != 0:
        raise RuntimeError(f"sbatch failed: {p.stderr.strip()}")
    job_id = p.stdout.strip().split(";")[0]
    try:
        return _until_running(t0, job_id)
    finally:
        finish(job_id)


def run(b: Bench, result: TierResult) -> None:
    check_available(b)
    try:
        wait_idle(30 if b.smoke else 300)
    except RuntimeError as e:
        raise Skip(f"the cluster is busy with other jobs: {e}") from None
    cwd = b.workdir("tier8")
    sbatch_lines: list[str] = []
    returned: dict = {"hpcgpu": [], "sbatch": []}
    if not b.smoke:  # unrecorded: warms caches and shows which resources hpcgpu asks for
        _hpcgpu_submit(b, cwd, sbatch_lines, {"hpcgpu": []})
    samples = interleave(b.reps, {"hpcgpu": lambda: _hpcgpu_submit(b, cwd, sbatch_lines, returned),
                                  "sbatch": lambda: _plain_sbatch(cwd, sbatch_lines, returned)})
    result.figures.append(compare(
        "submit -> RUNNING", Stat("hpcgpu submit slurm", "s", samples["hpcgpu"]), Stat("plain sbatch", "s", samples["sbatch"]),
        "hpcgpu / sbatch", "<= 1.2",
        note=f"The submit command itself returned after {statistics.median(returned['hpcgpu']):.3f} s (hpcgpu) and "
             f"{statistics.median(returned['sbatch']):.3f} s (sbatch), medians; the rest is Slurm starting the job "
             f"(its scheduler starts a job at submission or at its next pass). "
             f"squeue polled every {POLL_S} s; each repetition starts with both nodes idle. The plain script "
             f"asks for the same resources: {'; '.join(sbatch_lines or FALLBACK_SBATCH)}."))
