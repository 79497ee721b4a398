"""The local backend: its container prefix, status from the run dir, cancel, and its node half."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess

import pytest

from hpcgpu.backends import get_backend, node_facts
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.procs import start_time
from hpcgpu.contract.runfiles import write_result
from hpcgpu.contract.states import RunState
from hpcgpu.host.container import ContainerSettings, check_runtime
from hpcgpu.host.runs import RunRecord
from hpcgpu.host.spec import parse_spec
from tests.helpers.plans import plan_for

PODMAN = "container: {runtime: podman, image: localhost/hpcgpu:test, binds: ['/d:/d:ro']}\nresources: {gpus_per_node: 0}\n"


def test_the_container_prefix_mounts_the_launch_dir_and_names_the_plans_variables():
    spec = parse_spec(PODMAN)
    assert ContainerSettings.from_spec(spec.container) == ContainerSettings(
        runtime="podman", image="localhost/hpcgpu:test", binds=("/d:/d:ro",))
    plan = plan_for(spec)
    argv = list(plan.container_prefix)
    assert argv[:2] == ["podman", "run"] and argv[-1] == "localhost/hpcgpu:test"
    assert "/home/ada/proj:/home/ada/proj" in argv and argv[argv.index("-w") + 1] == "/home/ada/proj"
    assert {"HPCGPU_RUN_DIR", "HPCGPU_PLAN_FILE"} <= {argv[i + 1] for i, a in enumerate(argv) if a == "-e"}
    assert "--device" not in argv
    # inside the image the agent runs with the image's python, on the same plan file
    assert plan.node_argv == ("python3", "-m", "hpcgpu", "train", "--plan", "/home/ada/proj/runs/demo-1/plan.json")


def test_gpus_in_the_plan_give_the_container_its_gpus():
    plan = plan_for("container: {runtime: podman, image: img}\n", visible_gpus=2)
    assert plan.device_type == "cuda" and "nvidia.com/gpu=all" in plan.container_prefix


def test_the_spec_env_names_reach_the_container_even_when_the_user_overrides_them():
    # The user's environment overrides the spec's MY_FLAG, so the plan's env lacks it; the
    # container must still get it (from the environment), or the rank sees no value at all.
    plan = plan_for("container: {runtime: docker, image: img}\nenv: {MY_FLAG: '1'}\n", environ={"MY_FLAG": "2"})
    argv = list(plan.container_prefix)
    assert "MY_FLAG" not in plan.env and argv[argv.index("MY_FLAG") - 1] == "-e"


def test_local_runs_name_their_container_and_a_live_one_blocks_a_second_start():
    argv = list(plan_for("container: {runtime: podman, image: img}\n").container_prefix)
    assert argv[argv.index("--name") + 1] == "hpcgpu-demo-1"

    def exists(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, "running", "")

    with pytest.raises(UserError, match="container hpcgpu-demo-1 of this run still exists") as info:
        check_runtime("podman", "img", which=lambda n: f"/usr/bin/{n}", run=exists, container_name="hpcgpu-demo-1")
    assert "podman stop" in info.value.hint


def test_pyxis_is_refused_for_a_local_run():
    # pyxis is only srun options: a local run would otherwise start on the host without a word
    with pytest.raises(UserError, match="pyxis runs only under Slurm"):
        plan_for("container: {runtime: pyxis, image: img}\n")


def test_status_comes_from_result_json_then_from_the_launching_process(tmp_path):
    backend = get_backend("local")
    record = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=os.getpid(),
                       pid_start=start_time(os.getpid()))
    assert backend.status(record).state is RunState.RUNNING  # this process launched it and lives
    dead = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=2 ** 22 + 7, pid_start=5)
    lost = backend.status(dead)
    assert lost.state is RunState.LOST and "pid 4194311" in lost.reason and "ended without" in lost.reason
    for code, state in ((0, RunState.DONE), (75, RunState.STOPPED), (1, RunState.FAILED), (137, RunState.FAILED),
                        (143, RunState.INTERRUPTED), (130, RunState.INTERRUPTED), (140, RunState.INTERRUPTED)):
        write_result(tmp_path, code)
        assert backend.status(record).state is state


@pytest.fixture
def bystander():
    """A process that is not hpcgpu's, as one that reused an ended launcher's pid would be."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_reused_launcher_pid_is_neither_running_nor_cancelled(tmp_path, bystander):
    # the launcher (recorded as pid + start time) ended; its pid now belongs to someone else's process
    record = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=bystander.pid,
                       pid_start=start_time(bystander.pid) - 1)
    status = get_backend("local").status(record)
    assert status.state is RunState.LOST, status
    with pytest.raises(UserError, match=r"run r is not running \(LOST: its launcher \(pid \d+\) ended"):
        get_backend("local").cancel(record)
    assert bystander.poll() is None  # not signalled


def test_cancel_of_a_finished_run_says_so_and_signals_nothing(tmp_path, bystander):
    record = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=bystander.pid,
                       pid_start=start_time(bystander.pid))
    write_result(tmp_path, 0)
    with pytest.raises(UserError, match=r"run r is not running \(DONE\); nothing was signalled"):
        get_backend("local").cancel(record)
    assert bystander.poll() is None


def test_cancel_of_a_running_run_sends_sigterm_to_its_launcher(tmp_path, bystander):
    record = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=bystander.pid,
                       pid_start=start_time(bystander.pid))
    get_backend("local").cancel(record)
    assert bystander.wait(timeout=10) == -signal.SIGTERM


def test_a_record_without_a_start_time_is_not_trusted_while_its_pid_lives(tmp_path, bystander):
    # run.json written before start times were recorded: a live pid may be anyone's
    record = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=bystander.pid)
    status = get_backend("local").status(record)
    assert status.state is RunState.UNKNOWN and "cannot be told" in status.reason
    with pytest.raises(UserError, match="nothing was signalled"):
        get_backend("local").cancel(record)
    assert bystander.poll() is None


def test_cancel_refuses_a_run_of_another_host(tmp_path):
    record = RunRecord(id="r", run_dir=str(tmp_path), backend="local", created=0.0, pid=1, host="elsewhere")
    with pytest.raises(UserError, match="runs on elsewhere"):
        get_backend("local").cancel(record)


def test_node_facts_one_node_on_loopback_several_from_the_plan():
    one = node_facts(plan_for(""), {})
    assert (one.nnodes, one.node_rank, one.endpoint, one.is_head, one.rdzv_id) == (1, 0, "127.0.0.1:0", True, "demo-1")
    two = plan_for("resources: {nodes: 2, gpus_per_node: 0}\n",
                   environ={"HPCGPU_RDZV_ENDPOINT": "10.0.0.1:29400", "HPCGPU_NODE_RANK": "1"})
    second = node_facts(two, {})  # from the plan's request (run local --nnodes): the agent's environment need not say it
    assert (second.node_rank, second.endpoint, second.is_head) == (1, "10.0.0.1:29400", False)
    older = dataclasses.replace(two, request={})  # a plan.json without the request reads the environment
    with pytest.raises(UserError, match="HPCGPU_RDZV_ENDPOINT is not set"):
        node_facts(older, {})
    assert node_facts(older, {"HPCGPU_RDZV_ENDPOINT": "10.0.0.2:1", "HPCGPU_NODE_RANK": "1"}).endpoint == "10.0.0.2:1"


def test_facts_are_the_only_input(tmp_path, monkeypatch):
    # the same spec and facts give the same plan wherever it is built: nothing is read from the process
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCCL_DEBUG", "TRACE")
    assert plan_for(PODMAN) == plan_for(PODMAN)
    assert plan_for("debug: {nccl: info}\n").env["NCCL_DEBUG"] == "INFO"  # os.environ is not a fact given
    kept = plan_for("debug: {nccl: info}\n", environ={"NCCL_DEBUG": "TRACE"})
    assert "NCCL_DEBUG" not in kept.env and any("keeping your value TRACE" in n for n in kept.env_notes)
