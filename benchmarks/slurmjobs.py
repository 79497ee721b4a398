"""Slurm helpers the cluster tiers (8, 11) share: is the cluster there, job states, waiting for idle nodes."""

from __future__ import annotations

import re
import shutil
import subprocess

from benchmarks.harness import Bench, Skip, hpcgpu_cmd, run as run_cmd, wait_for

#: squeue states after which a job holds no node any more ("" once squeue has forgotten it)
ENDED = ("", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def sh(argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def check_available(b: Bench) -> None:
    """Skip, saying why, when `hpcgpu submit` does not exist yet or the cluster is not reachable."""
    p = run_cmd([*hpcgpu_cmd(), "submit", "slurm", "--help"], b.env(), b.scratch, timeout=60, check=False)
    if p.returncode != 0:
        raise Skip("`hpcgpu submit slurm --help` failed (the command is not there yet?): "
                   + (p.stderr.strip().splitlines() or ["no output"])[-1][:200])
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise Skip("Slurm client commands (sbatch, sinfo) are not installed: run `make slurm-up`")
    try:
        s = sh(["sinfo", "-h", "-o", "%t"])
    except subprocess.TimeoutExpired:
        raise Skip("sinfo timed out: the local Slurm cluster is not reachable (make slurm-up)") from None
    if s.returncode != 0 or not s.stdout.strip():
        raise Skip(f"sinfo failed: the local Slurm cluster is not up (make slurm-up): {s.stderr.strip()[:200]}")


def job_state(job_id: str) -> str:
    p = sh(["squeue", "-h", "-j", job_id, "-o", "%T"])
    return p.stdout.strip() if p.returncode == 0 else ""


def job_id_by_name(name: str) -> str:
    p = sh(["squeue", "-h", "-o", "%i %j"])
    ids = [line.split()[0] for line in p.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].startswith(name)]
    return ids[0] if ids else ""


def job_id_of(submit_output: str, name: str) -> str:
    """The job id `hpcgpu submit slurm` printed, else the id squeue lists for the job's name ("" if neither)."""
    found = re.search(r"\bjob(?: id)?[ :=]+(\d+)", submit_output, re.IGNORECASE)
    return found.group(1) if found else job_id_by_name(name)


def wait_idle(timeout: float = 300) -> None:
    """Wait until no job holds a node, so every repetition starts from the same empty cluster."""
    wait_for(lambda: set(sh(["sinfo", "-h", "-o", "%t"]).stdout.split()) <= {"idle"}, timeout,
             "the Slurm nodes to be idle (other jobs running?)", interval=0.2)


def finish(job_id: str) -> None:
    """Cancel the job (if it still runs) and wait until it holds no node."""
    sh(["scancel", job_id])
    wait_for(lambda: job_state(job_id) in ENDED, 120, f"job {job_id} to end", interval=0.1)
