"""NodeCommand: one command per node under submitit, rendezvous file, preemption and requeue.

The first tests run NodeCommand in this process or a child process (no cluster needed); the
`slurm`-marked ones submit it with submitit to the local two-node cluster.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

from hpcgpu.backends.slurm.node_command import NodeCommand, NodeCommandError

#: A child that records its environment, counts the stop signals it gets and, on the first one,
#: "checkpoints" and exits with MODE (75 = stopped, resumable). On a restart it finishes at once.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    out, mode = sys.argv[1], int(sys.argv[2])
    node, restart = os.environ.get("SLURM_NODEID", "0"), os.environ["HPCGPU_JOB_RESTARTS"]
    got = []
    signal.signal(signal.SIGUSR2, lambda *a: got.append(1))
    with open(f"{out}/env-{node}-{restart}", "w") as f:
        f.write(os.environ["HPCGPU_RDZV_ENDPOINT"] + " " + os.environ.get("EXTRA", "") + "\\n")
    if restart != "0" or mode == 0:
        sys.exit(0)
    while not got:
        time.sleep(0.05)
    time.sleep(0.5)  # the checkpoint; a second stop signal would be counted here
    with open(f"{out}/stopped-{node}-{restart}", "w") as f:
        f.write(str(len(got)))
    sys.exit(mode)
    """
)


@pytest.fixture
def child(tmp_path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def no_slurm_env(monkeypatch):
    """Run as if outside any Slurm job, even when pytest itself runs inside one."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "SUBMITIT_")):
            monkeypatch.delenv(name)


def command(child: Path, out: Path, mode: int, **kw) -> NodeCommand:
    """A NodeCommand running CHILD with output in out."""
    return NodeCommand([sys.executable, str(child), str(out), str(mode)], {"EXTRA": "x"},
                       rdzv_dir=out / "rdzv", **kw)


# --- no cluster needed -------------------------------------------------------------------------


def test_pickles_without_its_child_and_next_attempt_counts_restarts(child, tmp_path, monkeypatch):
    cmd = command(child, tmp_path, 0, grace_s=5)
    cmd._proc = subprocess.Popen([sys.executable, "-c", "pass"])
    cmd._proc.wait()
    clone = pickle.loads(cloudpickle.dumps(cmd))
    assert clone._proc is None and clone.argv == cmd.argv and clone.grace_s == 5
    assert cmd.next_attempt().requeues == 1 and cmd.requeues == 0
    # Slurm requeued it twice behind our back (e.g. node failure): the count never goes down.
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert cmd.restart_count() == 2 and cmd.next_attempt().requeues == 3


def test_rejects_argv_that_is_not_a_list_of_str(tmp_path):
    with pytest.raises(TypeError):
        NodeCommand("python train.py", rdzv_dir=tmp_path)  # type: ignore[arg-type]


def test_runs_outside_slurm_and_passes_the_env_contract(child, tmp_path, no_slurm_env):
    result = command(child, tmp_path, 0)()
    assert result["returncode"] == 0 and result["node"] == 0 and result["restarts"] == 0
    endpoint, extra = (tmp_path / "env-0-0").read_text().split()
    host, port = endpoint.rsplit(":", 1)
    assert extra == "x" and int(port) > 0
    assert (tmp_path / "rdzv" / "local-0.endpoint").read_text().strip() == endpoint


def test_failure_raises_with_its_exit_status(tmp_path, no_slurm_env):
    cmd = NodeCommand([sys.executable, "-c", "import sys; sys.exit(3)"], rdzv_dir=tmp_path)
    with pytest.raises(NodeCommandError, match="exit status 3") as err:
        cmd()
    assert err.value.returncode == 3


def test_a_hang_without_requeues_left_fails_the_job_saying_why(tmp_path, no_slurm_env):
    # the node agent exits 76 (hung); watchdog.requeues 0: node 0 ends the job, the reason named
    (tmp_path / "run").mkdir()
    cmd = NodeCommand([sys.executable, "-c", "import sys; sys.exit(76)"], rdzv_dir=tmp_path / "run" / "rdzv",
                      hang_requeues=0)
    assert cmd.run_dir == str(tmp_path / "run")  # the backend's layout: rdzv_dir inside the run dir
    with pytest.raises(NodeCommandError, match=r"hung and the job is not requeued: no hang report") as err:
        cmd()
    assert err.value.returncode == 76
    assert (tmp_path / "run" / "rdzv" / "local-0.head").read_text().strip() == "ended"


def test_a_hung_non_head_node_waits_for_node_0_and_exits_76(tmp_path, no_slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_NODEID", "1")
    (tmp_path / "local-0.endpoint").write_text("127.0.0.1:1\n")
    (tmp_path / "local-0.head").write_text("requeued\n")
    cmd = NodeCommand([sys.executable, "-c", "import sys; sys.exit(76)"], rdzv_dir=tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cmd()
    assert exit_.value.code == 76


def test_non_head_node_times_out_with_a_clear_error(tmp_path, no_slurm_env, monkeypatch):
    monkeypatch.setenv("SLURM_NODEID", "1")
    cmd = NodeCommand(["true"], rdzv_dir=tmp_path, rdzv_timeout_s=0.5)
    with pytest.raises(NodeCommandError, match="did not publish .*local-0.endpoint"):
        cmd()


def test_forwards_the_stop_signal_once_when_only_this_process_gets_it(child, tmp_path, no_slurm_env):
    # Outside a job step nobody else signals the child: NodeCommand must forward USR2.
    script = (
        "import sys; from pathlib import Path; from hpcgpu.backends.slurm.node_command import NodeCommand\n"
        f"NodeCommand([sys.executable, {str(child)!r}, {str(tmp_path)!r}, '75'],"
        f" rdzv_dir=Path({str(tmp_path)!r}) / 'rdzv')()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "env-0-0").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "child never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=30)
    assert (tmp_path / "stopped-0-0").read_text() == "1"
    # No submitit to requeue: "stopped, resumable" is passed on as the exit status.
    assert proc.returncode == 75, stderr
    assert "forwarding SIGUSR2" in stderr and "not requeued by submitit, exiting 75" in stderr


# --- on the local cluster ----------------------------------------------------------------------


def submit(folder: Path, cmd: NodeCommand, cancel_jobs, timeout_min: int = 60, signal_delay_s: int = 58,
           **executor_kw):
    """Submit cmd to both nodes, one task each, with the parameters the Slurm backend uses."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder / "submitit", **executor_kw)
    ex.update_parameters(
        nodes=2, tasks_per_node=1, timeout_min=timeout_min, slurm_signal_delay_s=signal_delay_s,
        # --requeue: scontrol requeue fails on sites with JobRequeue=0 unless the job asks for it.
        slurm_additional_parameters={"requeue": True},
        # One node failing ends the others at once instead of leaving them hung in a collective.
        slurm_srun_args=["--kill-on-bad-exit=1"],
    )
    job = ex.submit(cmd)
    cancel_jobs.append(job.job_id)
    return job


def logs(job) -> str:
    """Both tasks' submitit logs, for assertion messages."""
    parts = []
    for task in (0, 1):
        for name in ("stdout", "stderr"):
            text = getattr(job.task(task), name)() or ""
            parts.append(f"--- task {task} {name} ---\n" + "\n".join(text.splitlines()[-25:]))
    return "\n".join(parts)


def wait_started(tmp_path: Path, restart: int, timeout_s: float = 30) -> None:
    """Until both nodes' children have written their env file for this attempt."""
    deadline = time.monotonic() + timeout_s
    while not all((tmp_path / f"env-{n}-{restart}").exists() for n in (0, 1)):
        assert time.monotonic() < deadline, f"attempt {restart} did not start on both nodes"
        time.sleep(0.1)


@pytest.mark.slurm
def test_two_nodes_share_one_endpoint_from_the_head(slurm, cancel_jobs, child, tmp_path):
    job = submit(tmp_path, command(child, tmp_path, 0), cancel_jobs)
    assert slurm.wait_job_final(job.job_id).state == "COMPLETED", logs(job)
    results = sorted(job.results(), key=lambda r: r["node"])
    assert [(r["node"], r["host"], r["returncode"]) for r in results] == [(0, "node1", 0), (1, "node2", 0)]
    endpoints = {(tmp_path / f"env-{n}-0").read_text().split()[0] for n in (0, 1)}
    assert len(endpoints) == 1
    (endpoint,) = endpoints
    assert endpoint.startswith("node1:")
    assert (tmp_path / "rdzv" / f"{job.job_id}-0.endpoint").read_text().strip() == endpoint
    # The sacct-free state the backend can use (submitit's own Job.state is UNKNOWN here).
    assert slurm.show_job(job.job_id).state == "COMPLETED"
    assert job.state == "UNKNOWN"


@pytest.mark.slurm
def test_preempted_job_is_requeued_once_and_the_restart_finishes(slurm, cancel_jobs, child, tmp_path):
    job = submit(tmp_path, command(child, tmp_path, 75, grace_s=20), cancel_jobs)
    wait_started(tmp_path, 0)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    # Requeued jobs wait cred_expire (10 s here, 120 s by default) before they may start again.
    slurm.wait_for_job(job.job_id, lambda i: i.state == "PENDING" and i.restarts == 1, 30, "requeued")
    # Starting it in the same second as the requeue fails it ("Job credential revoked": slurmd
    # compares credential times in whole seconds), so let that second pass first.
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"jobid={job.job_id}", "StartTime=now"], check=True, timeout=30)
    info = slurm.wait_job_final(job.job_id)

    assert info.state == "COMPLETED" and info.restarts == 1, logs(job)
    # Each child saw USR2 exactly once: Slurm signals the whole step, NodeCommand does not re-send.
    assert [(tmp_path / f"stopped-{n}-0").read_text() for n in (0, 1)] == ["1", "1"]
    wait_started(tmp_path, 1, timeout_s=1)
    assert not (tmp_path / "stopped-0-1").exists()
    assert [r["restarts"] for r in job.results()] == [1, 1]
    # The requeued pickle carries our own counter (not only SLURM_RESTART_COUNT).
    assert job.submission().function.requeues == 1
    # A fresh endpoint file per attempt, so a restart never reads the old port.
    assert {p.name for p in (tmp_path / "rdzv").glob("*.endpoint")} == {
        f"{job.job_id}-0.endpoint", f"{job.job_id}-1.endpoint"}


@pytest.mark.slurm
def test_a_failure_while_stopping_is_not_requeued(slurm, cancel_jobs, child, tmp_path):
    job = submit(tmp_path, command(child, tmp_path, 3, grace_s=20), cancel_jobs)
    wait_started(tmp_path, 0)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    info = slurm.wait_job_final(job.job_id)
    assert info.state == "FAILED" and info.restarts == 0, logs(job)
    with pytest.raises(Exception, match="failed, exit status 3"):
        job.task(0).result()


@pytest.mark.slurm
def test_timeouts_beyond_max_num_timeout_are_not_requeued(slurm, cancel_jobs, child, tmp_path):
    # With a 5-minute limit submitit counts every signal as a timeout (T <= 10 min).
    job = submit(tmp_path, command(child, tmp_path, 75, grace_s=20), cancel_jobs, timeout_min=5,
                 slurm_max_num_timeout=0)
    wait_started(tmp_path, 0)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    info = slurm.wait_job_final(job.job_id)
    assert info.restarts == 0 and info.state != "COMPLETED", logs(job)
    with pytest.raises(Exception, match="timed-out too many times"):
        job.task(0).result()


@pytest.mark.slurm
def test_time_limit_warning_requeues_by_itself(slurm, cancel_jobs, child, tmp_path):
    # Slurm's own --signal=USR2@58 on a 1-minute job: submitit counts it as a timeout, requeues,
    # and the job starts again after cred_expire (10 s on the dev cluster) with nobody's help.
    job = submit(tmp_path, command(child, tmp_path, 75, grace_s=20), cancel_jobs, timeout_min=1)
    job_params = slurm.show_job(job.job_id).raw
    assert job_params["TimeLimit"] == "00:01:00"
    # slurmctld checks time limits every 30 s, so the warning comes 2-32 s after the start.
    info = slurm.wait_for_job(job.job_id, lambda i: i.state == "COMPLETED", 56, "COMPLETED after a requeue")
    assert info.restarts == 1, logs(job)
    # slurmctld's 30 s check decides when the warning lands: a node whose child had not yet installed
    # its handler sees that child die of SIGUSR2 itself (a clean stop too). Either way each node
    # stopped once: its child counted exactly one signal, or the node's log shows it handled the stop.
    handled = {0: "requeuing as restart 1", 1: f"child stopped (-{int(signal.SIGUSR2)})"}
    for n in (0, 1):
        marker = tmp_path / f"stopped-{n}-0"
        if marker.exists():
            assert marker.read_text() == "1", logs(job)
        else:
            said = (job.task(n).stderr() or "") + (job.task(n).stdout() or "")
            assert handled[n] in said, logs(job)
    # submitit logs to stdout; its "Requeued job" line may be cut off by the requeue's kill.
    assert "this job is timed-out" in job.task(0).stdout(), logs(job)
