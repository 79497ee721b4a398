"""A 2-node Slurm job whose node agents run inside the podman test image, preempted and requeued.

`hpcgpu submit slurm --container IMAGE` with `container: {runtime: podman}`: each node's task
(submitit + NodeCommand, on the host) runs `podman run ... IMAGE python3 -m hpcgpu train`. The
requeue is done from the host side (NodeCommand through submitit's `scontrol requeue`): the image
has no scontrol. `scancel --signal=USR2` reaches the podman client in the job step, which passes it
to the agent in the container (podman's --sig-proxy), which passes it to the ranks.

Rebuild the image after changing hpcgpu (`make image-test`): it holds a wheel of the tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.jobs import SLOW_TRAIN, node_logs, wait_for_text
from tests.helpers.paths import WHERE_TASK
from tests.helpers.slurm_requeue import wait_requeued_then_start_now

pytestmark = [pytest.mark.container, pytest.mark.slurm]

#: the shared slow demo, with a task that records where each rank ran (inside the container or not)
TRAIN = {**SLOW_TRAIN, "name": "ctrslurm",
         "entry": {"task": "where_task:make_task", "task_args": SLOW_TRAIN["entry"]["task_args"]}}


def containers_mounting(path: Path) -> list[str]:
    """Ids of podman containers (any state) that mount path: none may outlive the job."""
    ids = subprocess.run(["podman", "ps", "-aq"], capture_output=True, text=True).stdout.split()
    found = []
    for cid in ids:
        out = subprocess.run(["podman", "inspect", "--format", "{{range .Mounts}}{{.Source}} {{end}}", cid],
                             capture_output=True, text=True)
        if str(path) in out.stdout.split():
            found.append(cid)
    return found


def test_two_nodes_in_the_image_requeue_and_resume(slurm, cancel_jobs, test_image, machine_args, tmp_path):
    shutil.copy(WHERE_TASK, tmp_path / "where_task.py")
    spec = {**TRAIN, "container": {"runtime": "podman", "image": test_image}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HPCGPU_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
           "HPCGPU_PODMAN_ARGS": shlex.join(machine_args)}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hpcgpu", "submit", "slurm", "-f", "spec.yaml", "--nodes", "2",
                          "--nproc-per-node", "1", "--time", "30", "--container", test_image],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = re.search(r"as Slurm job (\d+)", out.stdout).group(1)
    cancel_jobs.append(job_id)
    run_dir = Path(re.search(r"run dir: (\S+)", out.stdout).group(1))
    rank0 = run_dir / "logs" / "rank0.log"
    wait_for_text(rank0, r"^step 2/32 ", 90, lambda: node_logs(run_dir))
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)

    # requeued from the host side by node 0's NodeCommand, then allowed to start at once
    wait_requeued_then_start_now(slurm, job_id, 60)
    info = slurm.wait_job_final(job_id, timeout_s=120)
    elapsed = time.monotonic() - start
    assert info.state == "COMPLETED" and info.restarts == 1, node_logs(run_dir)

    # every node's task ran the podman prefix hpcgpu planned
    started = [line for p in (run_dir / "submitit").glob("*_log.out") for line in p.read_text().splitlines()
               if re.match(r"hpcgpu\[node \d\]: started pid \d+: podman run --rm ", line)]
    assert len(started) == 4, node_logs(run_dir)  # 2 nodes x 2 attempts
    # the ranks ran inside the image, on both nodes, in both attempts
    records = [json.loads(line) for line in (run_dir / "where.jsonl").read_text().splitlines()]
    assert len(records) == 4, records
    for r in records:
        assert r["containerenv"] and r["executable"] == "/usr/bin/python3", r
        assert r["hpcgpu"].startswith("/usr/local/lib/python3"), r
    for attempt in (0, 1):
        assert sorted(r["node"] for r in records if r["restart"] == attempt) == ["node1", "node2"], records
        assert sorted(r["rank"] for r in records if r["restart"] == attempt) == [0, 1], records

    # stopped with a checkpoint inside the container, resumed from it after the requeue
    log = rank0.read_text()
    assert "hpcgpu: SIGUSR2 received: stopping at the next step boundary with a checkpoint" in log, log
    step = int(re.search(r"^hpcgpu: checkpoint step (\d+) -> ", log, re.M).group(1))
    assert 2 <= step < 32
    assert re.search(r"attempt 2 \(elastic restart 0, job restart 1\)", log), log
    assert re.search(rf"^hpcgpu: resuming from \S+step_{step:08d}: step {step},", log, re.M), log
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 32
    assert "this job is preempted" in (run_dir / "submitit" / f"{job_id}_0_log.out").read_text()
    assert containers_mounting(tmp_path) == []  # --rm, and nothing orphaned by the requeue
    print(f"submit to COMPLETED after one requeue: {elapsed:.1f} s")
