"""Fixtures for tests that need the local Slurm cluster (slurm/cluster.sh, `make slurm-up`): a pytest
plugin, registered for the whole tree by tests/conftest.py. Mark such tests `pytest.mark.slurm`.

Without the cluster the tests skip, unless HPCGPU_REQUIRE_SLURM=1 (CI, `make test`): then they
fail, so a broken cluster can never pass as "all skipped". Without slurmdbd there is no sacct;
job states come from `scontrol show job` (kept MinJobAge=600 s after the end) and squeue.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: the nodes of the default partition (debug), which most tests use
NODES = ("node1", "node2")
#: every node: partition wide adds node3, a spare for a two-node job (slurm/cluster.sh)
ALL_NODES = ("node1", "node2", "node3")
#: the cluster's private /24 (slurm/cluster.sh: nodeN is .N, slurmctld's bridge .254)
NET = ipaddress.ip_network(f"{os.environ.get('HPCGPU_SLURM_NET', '10.231.1')}.0/24")
#: sinfo %t states in which a node runs (or can run) jobs
USABLE = {"idle", "mix", "alloc", "comp"}
#: JobState values after which a job never runs again (unless someone requeues it)
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def cluster_problem() -> str | None:
    """Why the cluster is not usable, or None when all its nodes are."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True,
                             text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out after 20 s"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    bad = {n: states.get(n, "missing") for n in ALL_NODES if states.get(n) not in USABLE}
    if bad:
        return f"nodes not usable: {bad}"
    return layout_problem()


def layout_problem() -> str | None:
    """Why the node names do not resolve to the nodes' own addresses in NET (the cluster predates
    the node namespaces, or /etc/hosts was edited), or None."""
    for node in ALL_NODES:
        try:
            addr = socket.gethostbyname(node)
        except OSError as e:
            return f"{node} does not resolve: {e}"
        if ipaddress.ip_address(addr) not in NET:
            return (f"{node} resolves to {addr}, not to an address in {NET}: the cluster is not the one "
                    "with a network namespace per node")
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> tuple[str, ...]:
    """The node names of the running local cluster; skip (or fail in CI) when it is not up."""
    problem = cluster_problem()
    if problem is None:
        return NODES
    message = f"local Slurm cluster not available ({problem}): run `make slurm-up`"
    if os.environ.get("HPCGPU_REQUIRE_SLURM") == "1":
        pytest.fail(message + " [HPCGPU_REQUIRE_SLURM=1]", pytrace=False)
    pytest.skip(message)


@dataclass
class JobInfo:
    """The fields of `scontrol show job` the tests look at."""

    job_id: str
    state: str
    reason: str
    restarts: int
    exit_code: str
    raw: dict[str, str]


def show_job(job_id: str) -> JobInfo | None:
    """`scontrol show job -o`, parsed; None once the job has left slurmctld's memory."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                         text=True, timeout=20)
    if out.returncode != 0:
        return None
    # Values have no spaces except in a few free-text fields the tests never read.
    raw = dict(re.findall(r"(\S+?)=(\S*)", out.stdout))
    return JobInfo(str(job_id), raw.get("JobState", ""), raw.get("Reason", ""),
                   int(raw.get("Restarts", "0") or 0), raw.get("ExitCode", ""), raw)


def wait_for_job(job_id: str, predicate, timeout_s: float, what: str) -> JobInfo:
    """Poll the job every 0.2 s until predicate(info) holds; fail with its last state if not."""
    deadline = time.monotonic() + timeout_s
    info = None
    while time.monotonic() < deadline:
        info = show_job(job_id)
        if info is not None and predicate(info):
            return info
        time.sleep(0.2)
    pytest.fail(f"job {job_id}: {what} not reached within {timeout_s:.0f}s; last: "
                f"{info.state + ' ' + info.reason if info else 'unknown'}", pytrace=False)


def wait_job_final(job_id: str, timeout_s: float = 45) -> JobInfo:
    """Wait until the job has ended (any final state)."""
    return wait_for_job(job_id, lambda i: i.state in FINAL, timeout_s, "a final state")


def sbatch(script: str, workdir: Path) -> str:
    """Submit a batch script (text) from workdir; return the job id."""
    path = workdir / "job.sh"
    path.write_text(script)
    out = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True,
                         cwd=workdir, timeout=30)
    assert out.returncode == 0, f"sbatch failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


class SlurmTools:
    """The helpers above, handed to tests as a fixture (or import them from tests.helpers.slurm_cluster)."""

    show_job = staticmethod(show_job)
    wait_for_job = staticmethod(wait_for_job)
    wait_job_final = staticmethod(wait_job_final)
    sbatch = staticmethod(sbatch)
    nodes = NODES


@pytest.fixture
def slurm(slurm_cluster) -> type[SlurmTools]:
    """Helpers to submit and watch jobs on the running local cluster."""
    return SlurmTools


@pytest.fixture
def cancel_jobs():
    """A list to append job ids to; whatever is still queued at the end of the test is cancelled."""
    jobs: list[str] = []
    yield jobs
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)


def _cluster_lock_path() -> Path:
    """One lock per pytest session (its xdist workers share the run's id)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    return Path(tempfile.gettempdir()) / f"hpcgpu-slurm-tests-{run}.lock"


@contextlib.contextmanager
def _cluster_lock(kind: int):
    """flock(kind) on the session's cluster lock, an exclusive waiter first: on Linux a pending LOCK_EX
    does not stop new LOCK_SH holders, so two Slurm chains taking turns with the shared lock would keep
    a test that needs the cluster to itself waiting until they both happen to be between tests. A
    turnstile fixes that: every taker passes it (the exclusive one holds it while it waits and runs)."""
    path = _cluster_lock_path()
    with open(path.with_suffix(".turnstile"), "a") as turnstile, open(path, "a") as f:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if kind == fcntl.LOCK_SH:
            fcntl.flock(f, kind)  # waits for an exclusive holder, never for a shared one
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(f, kind)  # waits for the shared holders to end; new ones wait at the turnstile
        yield  # both released when the files close


@pytest.fixture(autouse=True)
def _slurm_cluster_shared(request):
    """Slurm tests share the cluster with each other (make test runs them in two xdist groups side by
    side, each group in order), never with a test that has it to itself (slurm_cluster_to_itself)."""
    if not request.node.get_closest_marker("slurm") or "slurm_cluster_to_itself" in request.fixturenames:
        yield
        return
    with _cluster_lock(fcntl.LOCK_SH):
        yield


@pytest.fixture
def slurm_cluster_to_itself():
    """No other Slurm test of this session runs while the test does (it waits for those running to
    end): for a test that needs both nodes idle. Jobs they cancelled may still be ending."""
    with _cluster_lock(fcntl.LOCK_EX):
        yield
