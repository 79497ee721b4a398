"""`hpcgpu submit slurm --sweep` on the local cluster (docs/sweeps.md): a 2x2 sweep is one job array
(one sbatch, tasks JOBID_0..3); USR2 to one task checkpoints and requeues that task alone, which
resumes from its own checkpoint; every task ends with the final loss of a plain run with the same
overrides."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.jobs import node_logs, wait_for_text
from tests.helpers.session_once import session_once
from tests.helpers.slurm_requeue import wait_requeued_then_start_now
from tests.helpers.sweeps import GRID_ARGS, final_loss, hpcgpu, plain_losses, write_spec

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> list[float]:
    # the same 4 runs as the other sweep module's: trained once per session
    return session_once(tmp_path_factory, "sweep-plain-losses", lambda: plain_losses(tmp_path_factory.mktemp("plain")))


def test_a_2x2_sweep_is_one_array_and_usr2_requeues_only_its_task(slurm, cancel_jobs, plain, tmp_path):
    spec = write_spec(tmp_path)
    home = tmp_path / "home"
    # a 30-minute limit: submitit counts the signal as a preemption, not a timeout
    out = hpcgpu(["submit", "slurm", "-f", str(spec), "--nproc-per-node", "1", "--time", "30", "--parallel", "2",
                  *GRID_ARGS], tmp_path, home)
    assert out.returncode == 0, out.stdout + out.stderr
    sweep_id, job_id = re.search(r"submitted sweep (\S+) as Slurm array job (\d+) \(4 task", out.stdout).groups()
    cancel_jobs.append(job_id)
    sweep_dir = tmp_path / "runs" / sweep_id
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["job_ids"] == [job_id]
    # one sbatch: one script in the array's submitit folder, and task i is array index i
    assert len(list((sweep_dir / "submitit").glob("*_submission.sh"))) == 1
    queued = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True,
                            timeout=30).stdout.split()
    assert set(queued) <= {f"{job_id}_{i}" for i in range(4)} and f"{job_id}_3" in queued, queued
    tasks = [Path(t["run_dir"]) for t in record["tasks"]]
    assert [json.loads((d / "run.json").read_text())["job_id"] for d in tasks] == [f"{job_id}_{i}" for i in range(4)]

    wait_for_text(tasks[1] / "logs" / "rank0.log", r"^step 2/32 ", 120, lambda: node_logs(tasks[1]))
    # While other tasks of the array are pending, slurmctld delivers `scancel --signal USR2 JOBID_1` to
    # the task but answers "Job can not be altered now, try again later", and scancel retries every few
    # seconds, signalling the requeued task again (seen on Slurm 22.05): stop scancel once it was delivered.
    scancel = subprocess.Popen(["scancel", "--signal=USR2", f"{job_id}_1"])
    try:
        wait_for_text(tasks[1] / "logs" / "rank0.log", r"^hpcgpu: SIGUSR2 received", 30)
    finally:
        scancel.kill()
        scancel.wait()
    wait_requeued_then_start_now(slurm, f"{job_id}_1", 60, "task 1 requeued")
    finals = [slurm.wait_job_final(f"{job_id}_{i}", timeout_s=180) for i in range(4)]
    assert [f.state for f in finals] == ["COMPLETED"] * 4, [node_logs(d) for d in tasks]
    assert [f.restarts for f in finals] == [0, 1, 0, 0]  # the signal requeued task 1 only

    log1 = (tasks[1] / "logs" / "rank0.log").read_text()
    stopped = int(re.search(r"^hpcgpu: checkpoint step (\d+) -> ", log1, re.MULTILINE).group(1))
    assert 2 <= stopped < 32, log1
    assert re.search(rf"^hpcgpu: resuming from {re.escape(str(tasks[1]))}/checkpoints/step_{stopped:08d}: ",
                     log1, re.MULTILINE), log1  # its own checkpoint
    assert "resuming from" not in (tasks[0] / "logs" / "rank0.log").read_text()
    assert [final_loss(d) for d in tasks] == plain

    status = hpcgpu(["status", sweep_id, "--json"], tmp_path, home)
    rows = json.loads(status.stdout)["tasks"]
    assert [(r["state"], r["restarts"], r["loss"]) for r in rows] == [("DONE", n, loss) for n, loss in zip([0, 1, 0, 0], plain)]
    text = hpcgpu(["status", sweep_id], tmp_path, home).stdout
    assert f"array job: {job_id}" in text and "results, best first by final_loss (min):" in text
    logs = hpcgpu(["logs", sweep_id, "--task", "2"], tmp_path, home)
    assert f"final_loss={plain[2]!r}" in logs.stdout
