"""`hpcgpu submit slurm` refuses what cannot run before submitting (exit 2, no job, no run dir), and
takes a burst of submissions without losing one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

TINY = {"entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 64}},
        "train": {"batch_size": 16, "epochs": 1}, "logging": {"tensorboard": False}}


def _env(cwd: Path, env: dict | None) -> dict:
    return {**os.environ, "HPCGPU_HOME": str(cwd / "home"), **(env or {})}


def cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=_env(cwd, env), capture_output=True,
                          text=True, timeout=timeout)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=_env(cwd, None), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def jobs_named(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@pytest.mark.parametrize("args, env, message", [
    ([], {"PATH": "/nonexistent"}, "Slurm is not available here: no `sbatch` on PATH"),
    (["--partition", "nope"], {}, "partition 'nope' does not exist (partitions: debug, wide)"),
    (["--gpus-per-node", "1"], {}, "asked for 1 GPUs per node, nodes of partition 'debug' have at most 0"),
    (["--nodes", "3"], {}, "asked for 3 nodes, partition 'debug' has 2"),
    (["--nproc-per-node", "8"], {}, "asked for 8 CPUs per node (resources.cpus_per_task; by default 8 per GPU rank, one per CPU rank), "
                                    "nodes of partition 'debug' have at most 4"),
    # only sbatch itself knows: the run dir made for it is removed again
    (["--constraint", "h100"], {}, "sbatch refused the job: sbatch: error: Batch job submission failed: "
                                   "Invalid feature specification"),
], ids=["no-sbatch", "no-partition", "gpus", "nodes", "cpus", "sbatch-refuses"])
def test_requests_that_cannot_run_are_refused_before_submitting(slurm_cluster, tmp_path, args, env, message):
    name = f"refused-{os.getpid()}-{len(args)}{len(env)}"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**TINY, "name": name}))
    if "--gpus-per-node" not in args:
        args = ["--nproc-per-node", "1", *args]
    out = cli(["submit", "slurm", "-f", "spec.yaml", *args, "--time", "2"], tmp_path, env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("Invalid feature") <= 1  # sbatch's words once, not echoed twice
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert jobs_named(name) == []
    assert "no runs yet" in cli(["status"], tmp_path).stdout


def test_a_burst_of_twenty_submissions_is_all_accepted_and_tracked(slurm_cluster, tmp_path, cancel_jobs):
    # Held jobs (sbatch --hold): accepted and tracked, but they take no CPU from the other tests.
    name = f"burst-{os.getpid()}"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**TINY, "name": name, "slurm": {"extra": {"hold": True}}}))
    procs = [start(["submit", "slurm", "-f", "spec.yaml", "--nproc-per-node", "1", "--time", "2"], tmp_path)
             for _ in range(20)]
    outs = [p.communicate(timeout=180) for p in procs]
    jobs = []
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stdout + stderr
        jobs.append(re.search(r"as Slurm job (\d+)", stdout).group(1))
    cancel_jobs.extend(jobs)
    assert len(set(jobs)) == 20 and sorted(jobs) == sorted(jobs_named(name))

    listing = cli(["status", "-n", "50"], tmp_path).stdout
    rows = [line for line in listing.splitlines() if line.startswith(name)]
    assert len(rows) == 20, listing
    assert {row.split()[3] for row in rows} == set(jobs)
    assert all(row.split()[2] == "PENDING" for row in rows), listing
    assert len({p.name for p in (tmp_path / "runs").iterdir()}) == 20  # one run dir each, none shared

    cancels = [start(["cancel", job], tmp_path) for job in jobs]
    for p in cancels:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stdout + stderr
    deadline = time.monotonic() + 30
    while jobs_named(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs_named(name) == []
