"""Starting a requeued Slurm job at once, for the Slurm tests that requeue (tests/backends/slurm/).

A requeued job may start again only after AuthInfo's cred_expire (slurm/slurm.conf.template): the
tests set StartTime=now instead. slurmctld revokes the job's old credentials at the requeue, with a
one-second clock, and a credential created in that same second counts as revoked ("credential
revoked": the job fails). So the update waits until the clock has moved past the second in which
the requeue was seen, instead of a fixed two seconds.
"""

from __future__ import annotations

import math
import subprocess
import time

#: after the next whole second, a little more: the job's new credential is made later still
MARGIN_S = 0.3


def start_now_after_requeue(job_id: str, requeue_seen_at: float) -> None:
    """StartTime=now for a job seen PENDING after its requeue at `requeue_seen_at` (time.time())."""
    start_at = math.floor(requeue_seen_at) + 1 + MARGIN_S
    while (left := start_at - time.time()) > 0:
        time.sleep(left)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30)


def wait_requeued_then_start_now(slurm, job_id: str, timeout_s: float, what: str = "requeued"):
    """Wait until the job is PENDING after one restart, then let it start at once; its info."""
    info = slurm.wait_for_job(job_id, lambda i: i.state == "PENDING" and i.restarts == 1, timeout_s, what)
    start_now_after_requeue(job_id, time.time())
    return info
