"""`hpcgpu submit slurm` end to end on the local two-node cluster: training, preemption, status.

Each test runs the real CLI in a subprocess with its own HPCGPU_HOME; run directories live under
tmp_path, which both "nodes" see (they are one machine). The demo task is slowed a little
(`delay_s`) so a signal can land mid-training; the numbers do not depend on it. The preempted and
requeued job is one per session, shared with test_submit_tracking.py (preempted_tracked_run).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.jobs import SLOW_TRAIN, node_logs, wait_for_text
from tests.helpers.paths import REPO
from tests.helpers.session_once import session_once
from tests.helpers.slurm_cluster import SlurmTools
from tests.helpers.slurm_requeue import wait_requeued_then_start_now
from submitit.core.utils import DelayedSubmission

from hpcgpu.backends.slurm.planner import UNLIMITED_MIN, pyxis_node_prefix
from hpcgpu.host.spec import apply_overrides, parse_spec

#: the longest Slurm tests: a Slurm group of their own under make test (tests/helpers/xdist_groups.py)
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm-submit")]

TRAIN = SLOW_TRAIN
#: 2 nodes x 1 CPU rank; a 30-minute limit so submitit counts a signal as a preemption, not a timeout
TWO_NODES = ["--nodes", "2", "--nproc-per-node", "1", "--time", "30"]


def hpcgpu(args: list[str], cwd: Path, home: Path, env: dict | None = None, timeout: float = 120):
    """Run the CLI like a user would, from cwd, with the run index in home."""
    full_env = {**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def write_spec(directory: Path, spec: dict, name: str = "spec.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump(spec))
    return directory / name


def submit(args: list[str], cwd: Path, home: Path, cancel_jobs: list) -> tuple[str, str, Path]:
    """Submit; return (run id, job id, run dir). The job is cancelled at the end if still queued."""
    out = hpcgpu(["submit", "slurm", *args], cwd, home)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"submitted (\S+) as Slurm job (\d+)", out.stdout)
    assert m, out.stdout
    cancel_jobs.append(m.group(2))
    run_dir = re.search(r"run dir: (\S+)", out.stdout).group(1)
    return m.group(1), m.group(2), Path(run_dir)


def final_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["final_loss"]


def status_fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\s+(.*)$", text, re.MULTILINE))


def requeued_once_then_completed(slurm, job_id: str, run_dir: Path, requeue_timeout_s: float) -> None:
    """The job was requeued by node 0 (from the host side), is made eligible at once instead of after
    BeginTime, and then completes with exactly one restart."""
    wait_requeued_then_start_now(slurm, job_id, requeue_timeout_s)
    info = slurm.wait_job_final(job_id, timeout_s=120)
    assert info.state == "COMPLETED" and info.restarts == 1, node_logs(run_dir)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> float:
    """Final loss of an uninterrupted 1-node run with 2 ranks (`run local`): same global batch and seed."""
    base = tmp_path_factory.mktemp("baseline")
    spec = write_spec(base, TRAIN)
    out = hpcgpu(["run", "local", "-f", str(spec), "--nproc", "2"], base, base / "home", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    (run_dir,) = (base / "runs").iterdir()
    return final_loss(run_dir)


def test_two_nodes_train_to_the_same_loss_as_one_node(slurm, cancel_jobs, baseline, tmp_path):
    spec = write_spec(tmp_path, TRAIN)
    out = hpcgpu(["submit", "slurm", "-f", str(spec), *TWO_NODES, "--wait"], tmp_path, tmp_path / "home", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id, job_id = re.search(r"submitted (\S+) as Slurm job (\d+)", out.stdout).groups()
    cancel_jobs.append(job_id)
    run_dir = tmp_path / "runs" / run_id
    assert f"job {job_id} ended: DONE" in out.stdout
    assert final_loss(run_dir) == baseline  # bit for bit: same ranks, same data shards, same all-reduce
    # rank 1 ran on the second node of the allocation, a host of its own (slurm/cluster.sh): the
    # rendezvous and the all-reduce crossed the bridge between the nodes' namespaces
    assert re.search(r"rank 1/2 \(local 0, node 1\) .* on node2 ", (run_dir / "logs" / "rank1.log").read_text())
    assert re.search(r"rank 0/2 \(local 0, node 0\) .* on node1 ", (run_dir / "logs" / "rank0.log").read_text())
    assert slurm.show_job(job_id).raw["NodeList"] == "node[1-2]"


def preempt_tracked_run(directory: Path) -> dict:
    """Submit TRAIN on two nodes, tracked to TensorBoard and MLflow (where installed) at every step;
    USR2 after step 3: it checkpoints, is requeued once and completes. Where it ran, as a dict."""
    uri = f"sqlite:///{directory}/mlflow.db"
    trackers = ["tensorboard", "mlflow"] if importlib.util.find_spec("mlflow") else ["tensorboard"]
    spec = write_spec(directory, {**TRAIN, "train": {**TRAIN["train"], "log_every": 1},
                                  "logging": {"progress": "lines", "tensorboard": True, "trackers": trackers,
                                              "mlflow_tracking_uri": uri, "mlflow_experiment": "slurm"}})
    home = directory / "home"
    jobs: list[str] = []
    try:
        run_id, job_id, run_dir = submit(["-f", str(spec), *TWO_NODES], directory, home, jobs)
        wait_for_text(run_dir / "logs" / "rank0.log", r"^step 3/32 ", 90, lambda: node_logs(run_dir))
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        requeued_once_then_completed(SlurmTools, job_id, run_dir, requeue_timeout_s=60)
    finally:
        if jobs:  # a no-op once the job completed
            subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
    return {"run_id": run_id, "job_id": job_id, "run_dir": str(run_dir), "home": str(home), "mlflow_uri": uri,
            "trackers": trackers}


def preempted_tracked_run(tmp_path_factory) -> dict:
    """The one preempted and requeued job that this module's preemption test and
    test_submit_tracking.py (the same run in TensorBoard and MLflow) each check facts of: one job
    per session, whichever asks first."""
    return session_once(tmp_path_factory, "slurm-preempted-tracked-run",
                        lambda: preempt_tracked_run(tmp_path_factory.mktemp("preempted")))


def test_preemption_checkpoints_requeues_once_and_resumes_to_the_same_loss(slurm_cluster, baseline, tmp_path_factory,
                                                                          tmp_path):
    run = preempted_tracked_run(tmp_path_factory)
    run_id, job_id, run_dir, home = run["run_id"], run["job_id"], Path(run["run_dir"]), Path(run["home"])
    log = (run_dir / "logs" / "rank0.log").read_text()
    stopped = re.search(r"^hpcgpu: checkpoint step (\d+) -> ", log, re.MULTILINE)
    assert stopped, log
    step = int(stopped.group(1))
    assert 2 <= step < 32
    assert re.search(rf"^hpcgpu: stopped at step {step} ", log, re.MULTILINE), log
    # logs append across requeues: both attempts' headers, the second one resuming at the saved step
    assert re.search(r"attempt 1 \(elastic restart 0, job restart 0\)", log), log
    assert re.search(r"attempt 2 \(elastic restart 0, job restart 1\)", log), log
    assert re.search(rf"^hpcgpu: resuming from \S+step_{step:08d}: step {step},", log, re.MULTILINE), log
    assert "this job is preempted" in (run_dir / "submitit" / f"{job_id}_0_log.out").read_text()
    assert final_loss(run_dir) == baseline

    # from another directory, with only the shared run index: restarts and the last checkpoint
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = hpcgpu(["status", run_id], elsewhere, home)
    assert out.returncode == 0, out.stderr
    fields = status_fields(out.stdout)
    assert (fields["state"], fields["restarts"], fields["last_checkpoint_step"]) == ("DONE", "1", "32"), out.stdout
    assert fields["nodes"] == "node[1-2]"


@pytest.mark.parametrize("moment", ["agent started", "rank started"])
def test_preemption_during_start_up_requeues_and_the_restart_finishes(slurm, cancel_jobs, baseline, tmp_path,
                                                                      moment):
    # USR2 before any rank can checkpoint (the node agent just started, or a rank is still importing)
    # is still a stop: the job must be requeued, not failed out of the chain
    spec = write_spec(tmp_path, TRAIN)
    run_id, job_id, run_dir = submit(["-f", str(spec), *TWO_NODES], tmp_path, tmp_path / "home", cancel_jobs)
    if moment == "agent started":
        wait_for_text(run_dir / "submitit" / f"{job_id}_0_log.out", r"started pid \d+", 90,
                      lambda: node_logs(run_dir))
    else:
        wait_for_text(run_dir / "logs" / "rank0.log", r"^==== hpcgpu rank 0/2 ", 90, lambda: node_logs(run_dir))
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)

    requeued_once_then_completed(slurm, job_id, run_dir, requeue_timeout_s=90)
    assert final_loss(run_dir) == baseline


def test_status_logs_cancel_and_resume_from_another_directory_as_a_new_job_to_the_same_loss(slurm, cancel_jobs,
                                                                                               baseline, tmp_path):
    # One run for what status, logs and cancel show from another directory and for resuming it there:
    # TRAIN slowed to 0.6 s a step, so the commands land while it runs, even on a busy machine (the loss
    # does not depend on it).
    slow = {**TRAIN["entry"], "task_args": {**TRAIN["entry"]["task_args"], "delay_s": 0.6}}
    spec = write_spec(tmp_path / "project", {**TRAIN, "entry": slow})
    home = tmp_path / "home"
    run_id, job_id, run_dir = submit(["-f", str(spec), *TWO_NODES], tmp_path / "project", home, cancel_jobs)
    rank0 = run_dir / "logs" / "rank0.log"
    wait_for_text(rank0, r"^step 2/32 ", 90)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    fields = status_fields(hpcgpu(["status", run_id], elsewhere, home).stdout)
    assert (fields["state"], fields["job_id"], fields["nodes"], fields["restarts"]) == ("RUNNING", job_id, "node[1-2]", "0")
    assert fields["last_checkpoint_step"] == "-"
    assert status_fields(hpcgpu(["status", job_id], elsewhere, home).stdout)["id"] == run_id  # by job id too
    listing = hpcgpu(["status"], elsewhere, home).stdout
    assert re.search(rf"^{run_id}\s+slurm\s+RUNNING\s+{job_id}\s+node\[1-2\]\s+0\s+-$", listing, re.MULTILINE), listing

    out = hpcgpu(["logs", run_id, "--rank", "1"], elsewhere, home)
    assert out.returncode == 0 and "==== hpcgpu rank 1/2 (local 0, node 1)" in out.stdout, out.stdout + out.stderr
    running = hpcgpu(["submit", "slurm", "--resume", run_id], elsewhere, home)
    assert running.returncode == 2 and f"job {job_id} is RUNNING" in running.stderr, running.stdout + running.stderr

    out = hpcgpu(["cancel", run_id], elsewhere, home)
    assert out.returncode == 0 and f"(job {job_id})" in out.stdout, out.stdout + out.stderr
    info = slurm.wait_job_final(job_id, timeout_s=60)
    assert info.state == "CANCELLED" and info.restarts == 0, node_logs(run_dir)
    assert status_fields(hpcgpu(["status", run_id], elsewhere, home).stdout)["state"] == "CANCELLED"
    step = int(re.search(r"^hpcgpu: stopped at step (\d+) ", rank0.read_text(), re.MULTILINE).group(1))
    assert 2 <= step < 32

    # from another directory: the job runs where the run was started, and resumes at the saved step
    out = hpcgpu(["submit", "slurm", "--resume", run_id, "--wait"], elsewhere, home, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    new_job = re.search(rf"submitted {run_id} as Slurm job (\d+)", out.stdout).group(1)
    cancel_jobs.append(new_job)
    assert new_job != job_id and f"job {new_job} ended: DONE" in out.stdout, out.stdout
    log = rank0.read_text()
    assert re.search(rf"^hpcgpu: resuming from \S+step_{step:08d}: step {step},", log, re.MULTILINE), log
    assert final_loss(run_dir) == baseline
    assert json.loads((run_dir / f"result-job{job_id}.json").read_text())["exit_code"] == 75
    fields = status_fields(hpcgpu(["status", run_id], elsewhere, home).stdout)
    assert (fields["state"], fields["job_id"], fields["restarts"]) == ("DONE", new_job, "1"), fields

    done = hpcgpu(["submit", "slurm", "--resume", run_id], elsewhere, home)
    assert done.returncode == 2 and "has finished" in done.stderr, done.stdout + done.stderr


def test_dry_run_is_the_script_submitted_and_values_cannot_run_code(slurm, cancel_jobs, tmp_path):
    evil = "it's $(touch pwned-$USER) `touch pwned2`; \"x\" && touch pwned3\nsecond line $HOME"
    secret = "s3cret-value-never-written"
    (tmp_path / "show_env.py").write_text(
        "import hashlib, os, pathlib\n"
        "run = pathlib.Path(os.environ['HPCGPU_RUN_DIR'])\n"
        "(run / 'evil.txt').write_text(os.environ['EVIL'])\n"
        "(run / 'token.txt').write_text(hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest())\n")
    comment = "a b'c; $(touch pwned4) `touch pwned5` \"q\""
    spec = write_spec(tmp_path, {"name": "dry", "entry": {"script": "show_env.py"},
                                 "env": {"EVIL": evil, "API_TOKEN": secret},
                                 "slurm": {"extra": {"comment": comment}}, "logging": {"tensorboard": False}})
    args = ["-f", str(spec), "--nodes", "1", "--nproc-per-node", "1"]  # no --time: the partition's limit
    dry = hpcgpu(["submit", "slurm", *args, "--dry-run"], tmp_path, tmp_path / "home")
    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing

    run_id, job_id, run_dir = submit(args, tmp_path, tmp_path / "home", cancel_jobs)
    info = slurm.wait_job_final(job_id, timeout_s=60)
    assert info.state == "COMPLETED", node_logs(run_dir)

    dry_dir = re.search(r"^run dir:\s+(\S+)$", dry.stdout, re.MULTILINE).group(1)
    planned = re.search(r"--- sbatch script ---\n(.*)--- end ---", dry.stdout, re.DOTALL).group(1)
    submitted = (run_dir / "submitit" / f"{job_id}_submission.sh").read_text()
    assert planned.replace(dry_dir, str(run_dir)) == submitted
    # no --time in the script (not submitit's default 5 minutes); submitit's timeout accounting gets
    # the partition's limit instead: infinite here, so a warning signal would count as a preemption
    assert "--time" not in submitted
    submission = DelayedSubmission.load(run_dir / "submitit" / f"{job_id}_submitted.pkl")
    assert submission._timeout_min == UNLIMITED_MIN
    # the values arrived unchanged, and nothing ran
    assert (run_dir / "evil.txt").read_text() == evil
    # a secret-looking env value reaches the ranks through the job's environment, never a file
    assert (run_dir / "token.txt").read_text() == hashlib.sha256(secret.encode()).hexdigest()
    assert not [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    assert f"Comment={comment}" in out.stdout
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_timeouts_beyond_the_cap_stop_after_a_checkpoint_without_a_requeue(slurm, cancel_jobs, tmp_path):
    spec = write_spec(tmp_path, {**TRAIN, "slurm": {**TRAIN["slurm"], "max_timeout_requeues": 0}})
    # with a 5-minute limit submitit counts every warning as a timeout (ran >= min(0.8 T, T - 10 min)).
    # One rank: the subject is the job's timeout accounting, not how ranks agree on a stop (the
    # preemption tests above prove that on two nodes).
    run_id, job_id, run_dir = submit(["-f", str(spec), "--nodes", "1", "--nproc-per-node", "1", "--time", "5"],
                                     tmp_path, tmp_path / "home", cancel_jobs)
    wait_for_text(run_dir / "logs" / "rank0.log", r"^step 2/64 ", 90)  # one rank: 64 steps of 16 samples
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    info = slurm.wait_job_final(job_id, timeout_s=60)
    assert info.restarts == 0 and info.state == "FAILED", node_logs(run_dir)
    assert "timed-out too many times" in (run_dir / "submitit" / f"{job_id}_0_log.out").read_text()
    step = int(re.search(r"^hpcgpu: stopped at step (\d+) ", (run_dir / "logs" / "rank0.log").read_text(), re.MULTILINE).group(1))
    fields = status_fields(hpcgpu(["status", run_id], tmp_path, tmp_path / "home").stdout)
    # Slurm says FAILED; hpcgpu knows the ranks checkpointed and stopped: resumable
    assert (fields["state"], fields["restarts"], fields["last_checkpoint_step"]) == ("STOPPED", "0", str(step))


def test_a_nested_step_per_node_as_pyxis_uses_trains_to_the_same_loss(slurm, cancel_jobs, baseline, tmp_path, monkeypatch):
    # pyxis_node_prefix without container options: the same nested `srun --overlap` step per node that
    # carries pyxis's options on a cluster that has it (NodeCommand and the requeue stay outside)
    from hpcgpu.backends.slurm.backend import SlurmBackend
    from hpcgpu.host.facts import gather_facts
    from hpcgpu.host.launch import materialize
    from hpcgpu.host.plan import agent_command, with_parts

    monkeypatch.setenv("HPCGPU_HOME", str(tmp_path / "home"))
    spec = apply_overrides(parse_spec(yaml.safe_dump(TRAIN)), {
        "resources.nodes": 2, "resources.gpus_per_node": 0, "resources.procs_per_node": 1, "resources.time": "30"})
    run_dir = tmp_path / "runs" / "nested-1"
    run_dir.mkdir(parents=True)
    facts = gather_facts("slurm")
    plan = SlurmBackend().plan(spec, facts, run_id="nested-1", run_dir=str(run_dir))
    plan = with_parts(plan, node_argv=agent_command(sys.executable, str(run_dir)),
                      container_prefix=pyxis_node_prefix((), sys.executable))
    materialize(plan, spec, facts)
    job_id = SlurmBackend().launch(plan, {}).job_id
    cancel_jobs.append(job_id)
    info = slurm.wait_job_final(job_id, timeout_s=120)
    assert info.state == "COMPLETED", node_logs(run_dir)
    assert final_loss(run_dir) == baseline
    # the outer SLURM_NODEID reached the agent (the inner step alone would call both nodes 0)
    assert "rank 1/2 (local 0, node 1)" in (run_dir / "logs" / "rank1.log").read_text()
    assert "srun --overlap" in (run_dir / "submitit" / f"{job_id}_1_log.out").read_text()


@pytest.mark.container
def test_two_nodes_in_podman_containers_train_to_the_same_loss(slurm, cancel_jobs, baseline, tmp_path):
    # The node agent runs in the image on each node; NodeCommand (and a requeue) stay on the host.
    image = os.environ.get("HPCGPU_TEST_IMAGE", "localhost/hpcgpu:test")
    if shutil.which("podman") is None or subprocess.run(["podman", "image", "exists", image]).returncode != 0:
        if os.environ.get("HPCGPU_REQUIRE_CONTAINER") == "1":
            pytest.fail(f"HPCGPU_REQUIRE_CONTAINER=1 but podman or {image} is missing (make image-test)")
        pytest.skip(f"podman or {image} is missing (make image-test)")
    podman_args = os.environ.get("HPCGPU_PODMAN_ARGS")
    if podman_args is None:
        podman_args = subprocess.run([str(REPO / "containers" / "podman-args.sh")], capture_output=True, text=True,
                                     check=True).stdout.strip()
    spec = write_spec(tmp_path, {**TRAIN, "container": {"runtime": "podman", "image": image}})
    out = hpcgpu(["submit", "slurm", "-f", str(spec), *TWO_NODES, "--wait"], tmp_path, tmp_path / "home",
                 env={"HPCGPU_PODMAN_ARGS": podman_args}, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = re.search(r"submitted (\S+) as Slurm job", out.stdout).group(1)
    run_dir = tmp_path / "runs" / run_id
    # both agents ran in containers and still met: HPCGPU_RDZV_ENDPOINT was passed into each
    assert all("started pid" in log and f"{image} python3 -m hpcgpu train" in log
               for log in (p.read_text() for p in (run_dir / "submitit").glob("*_log.out"))), node_logs(run_dir)
    assert final_loss(run_dir) == baseline


def hung_job_spec(tmp_path: Path) -> Path:
    """TRAIN slowed to 0.5 s a step (a stop lands mid-run), watchdog.stall_s 3, a checkpoint every 4 steps."""
    slow = {**TRAIN["entry"], "task_args": {**TRAIN["entry"]["task_args"], "delay_s": 0.5}}
    return write_spec(tmp_path, {**TRAIN, "entry": slow, "watchdog": {"stall_s": 3}, "checkpoint": {"every_steps": 4}})


def stop_rank1_until_requeued(slurm, job_id: str, run_dir: Path):
    """SIGSTOP rank 1 after step 6; the job must be requeued without its node and then complete
    once. Returns (the hung node, the final job info)."""
    header = wait_for_text(run_dir / "logs" / "rank1.log", r"^==== hpcgpu rank 1/2 .* pid \d+ on \S+ ", 90,
                           lambda: node_logs(run_dir))
    pid, hung_node = re.search(r"^==== hpcgpu rank 1/2 .* pid (\d+) on (\S+) ", header, re.MULTILINE).groups()
    wait_for_text(run_dir / "logs" / "rank0.log", r"^step 6/32 ", 90, lambda: node_logs(run_dir))
    os.kill(int(pid), signal.SIGSTOP)

    info = wait_requeued_then_start_now(slurm, job_id, 90, "requeued after the hang")
    assert info.raw.get("ExcNodeList") == hung_node, info.raw
    final = slurm.wait_job_final(job_id, timeout_s=120)
    assert final.state == "COMPLETED" and final.restarts == 1, node_logs(run_dir)
    return hung_node, final


def test_a_hung_node_is_excluded_on_the_requeue_and_the_job_finishes_on_another_to_the_same_loss(
        slurm, cancel_jobs, baseline, tmp_path):
    # one node of the two-node cluster runs the job (2 ranks); rank 1 is stopped with SIGSTOP after the
    # step-4 checkpoint: the watchdog (stall_s 3) reports it, node 0 requeues the job without that node,
    # and the job resumes on the other node from its own checkpoint, to the uninterrupted loss
    spec = hung_job_spec(tmp_path)
    home = tmp_path / "home"
    run_id, job_id, run_dir = submit(["-f", str(spec), "--nodes", "1", "--nproc-per-node", "2", "--time", "30"],
                                     tmp_path, home, cancel_jobs)
    hung_node, _ = stop_rank1_until_requeued(slurm, job_id, run_dir)
    assert final_loss(run_dir) == baseline

    (report,) = [json.loads(p.read_text()) for p in run_dir.glob("hang-*.json")]
    assert report["culprits"] == [1] and {r["host"] for r in report["ranks"]} == {hung_node}, report
    log = (run_dir / "logs" / "rank0.log").read_text()
    other = re.search(r"attempt 2 \(elastic restart 0, job restart 1\) pid \d+ on (\S+) ", log).group(1)
    assert other != hung_node, log[-3000:]
    assert re.search(r"^hpcgpu: resuming from \S+step_0000000[48]: step [48],", log, re.MULTILINE), log[-3000:]
    excluded = json.loads((run_dir / "excluded.json").read_text())
    assert (excluded["nodes"], excluded["requeues"]) == ([hung_node], 1), excluded
    assert excluded["history"][0]["reason"] == f"rank(s) 1 hung on {hung_node}", excluded
    # node 0's log keeps both attempts (sbatch --open-mode=append): the hang, then the requeue
    node0 = (run_dir / "submitit" / f"{job_id}_0_log.out").read_text()
    assert f"hpcgpu[node 0]: hung: rank(s) 1 hung on {hung_node}; requeued without {hung_node}" in node0, node0[-3000:]
    fields = status_fields(hpcgpu(["status", run_id], tmp_path, home).stdout)
    assert (fields["state"], fields["excluded_nodes"]) == ("DONE", hung_node), fields
    assert fields["last_hang"].startswith(f"rank(s) 1 on {hung_node}; "), fields


def test_a_hung_node_of_a_two_node_job_is_excluded_and_the_job_finishes_on_the_spare(slurm, cancel_jobs, baseline,
                                                                                     tmp_path):
    # partition wide has three nodes (slurm/cluster.sh): the job runs on two, one rank each; node 1's
    # rank is stopped with SIGSTOP; node 0's agent gathers both nodes' views, names it, and the job is
    # requeued without its node, to finish on the other two from its checkpoint, to the same loss
    spec = hung_job_spec(tmp_path)
    home = tmp_path / "home"
    run_id, job_id, run_dir = submit(["-f", str(spec), *TWO_NODES, "--partition", "wide"], tmp_path, home, cancel_jobs)
    hung_node, final = stop_rank1_until_requeued(slurm, job_id, run_dir)
    assert hung_node not in final.raw["NodeList"] and final.raw["NodeList"] != "(null)", final.raw
    assert final_loss(run_dir) == baseline

    (report,) = [json.loads(p.read_text()) for p in run_dir.glob("hang-*.json")]
    assert report["culprits"] == [1], report
    assert {r["rank"]: r["host"] for r in report["ranks"]}[1] == hung_node  # node 1's view reached node 0
    fields = status_fields(hpcgpu(["status", run_id], tmp_path, home).stdout)
    assert (fields["state"], fields["excluded_nodes"], fields["restarts"]) == ("DONE", hung_node, "1"), fields
