"""The Slurm planner is pure: sbatch parameters, values that could break out of the script, fit
checks and time limits from the partitions the host saw (facts), all inside the plan's request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.backends.slurm.planner import (RESERVED_OPTIONS, UNLIMITED_MIN, check_run_dir, limit_to_minutes,
                                           node_grace_s, partition_fit_problem, time_to_minutes, valid_job_id)
from hpcgpu.host.spec import apply_overrides, parse_spec
from tests.helpers.plans import SINFO_ROWS, plan_for

RUN_DIR = "/shared/runs/t-1"


def spec(text: str = "", **over):
    return apply_overrides(parse_spec(text), over)


def slurm_plan(s, **facts):
    return plan_for(s, backend="slurm", run_id="t-1", run_dir=RUN_DIR, python="/venv/bin/python", **facts)


def params(s) -> dict:
    return slurm_plan(s).request["sbatch_parameters"]


def script(s) -> str:
    return slurm_plan(s).request["sbatch"]


@pytest.mark.parametrize("text, minutes", [("30", 30), ("30:01", 31), ("04:00:00", 240), ("1-00", 1440),
                                           ("1-02:30", 1590), ("2-00:00:01", 2881)])
def test_time_to_minutes(text, minutes):
    assert time_to_minutes(text) == minutes


@pytest.mark.parametrize("text, minutes", [("infinite", UNLIMITED_MIN), ("UNLIMITED", UNLIMITED_MIN),
                                           ("n/a", None), ("NONE", None), ("1-00:00:00", 1440), ("30:00", 30)])
def test_partition_limits(text, minutes):
    assert limit_to_minutes(text) == minutes


def test_one_task_per_node_and_its_cpus():
    got = params(spec(**{"resources.nodes": 2, "resources.gpus_per_node": 4}))
    assert got["ntasks_per_node"] == 1 and got["nodes"] == 2 and got["gpus_per_node"] == 4
    assert got["cpus_per_task"] == 32  # 8 per GPU rank
    assert params(spec(**{"resources.gpus_per_node": 0, "resources.procs_per_node": 3}))["cpus_per_task"] == 3
    assert params(spec(**{"resources.gpus_per_node": 8, "resources.cpus_per_task": 96}))["cpus_per_task"] == 96
    assert params(spec(**{"resources.gpus_per_node": 4, "train.strategy": "dp"}))["cpus_per_task"] == 8  # one process


def test_no_time_leaves_the_partition_default_instead_of_submitits_five_minutes():
    text = script(spec(**{"resources.gpus_per_node": 0}))
    assert "--time" not in text
    assert "#SBATCH --time=90\n" in script(spec(**{"resources.gpus_per_node": 0, "resources.time": "01:30:00"}))


def test_signal_and_requeue():
    text = script(spec(**{"resources.gpus_per_node": 0, "slurm.signal_before_s": 200}))
    assert "#SBATCH --signal=USR2@200\n" in text and "#SBATCH --requeue\n" in text
    assert "#SBATCH --open-mode=append\n" in text  # logs append across requeues


@pytest.mark.parametrize("key, flag", [("slurm.partition", "--partition"), ("slurm.account", "--account"),
                                       ("slurm.qos", "--qos"), ("slurm.constraint", "--constraint")])
def test_newline_in_a_value_is_refused_naming_the_key(key, flag):
    with pytest.raises(UserError) as info:  # refused when the spec loads, before any script exists
        params(spec(**{"resources.gpus_per_node": 0, key: "debug\ntouch /tmp/pwned #"}))
    assert key in str(info.value) and "newline" in str(info.value)


def test_newline_in_an_extra_option_is_refused_naming_the_key():
    with pytest.raises(UserError, match=r"slurm\.extra"):
        params(spec("slurm: {extra: {comment: \"ok\\ntouch /tmp/pwned\"}}\n", **{"resources.gpus_per_node": 0}))
    with pytest.raises(UserError, match="control character"):
        s = spec("slurm: {extra: {comment: \"tab\\there\"}}\n", **{"resources.gpus_per_node": 0})
        params(s)


def test_shell_metacharacters_are_quoted_into_one_value():
    evil = "a b'c; $(touch /tmp/pwned) `id` \"q\" && rm -rf ~"
    text = script(spec(**{"resources.gpus_per_node": 0, "slurm.account": evil, "slurm.extra": {"comment": evil}}))
    lines = [ln for ln in text.splitlines() if ln.startswith(("#SBATCH --account=", "#SBATCH --comment="))]
    assert len(lines) == 2
    for line in lines:
        # bash sees a comment; sbatch reads the value with shell quoting: the original, as one word
        value = line.split("=", 1)[1]
        out = subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True, text=True, check=True)
        assert out.stdout == evil


def test_env_values_never_reach_the_script():
    s = spec("env: {X: \"$(touch /tmp/pwned)\\nid\"}\n", **{"resources.gpus_per_node": 0})
    assert "pwned" not in script(s)


def test_the_script_is_valid_bash():
    text = script(spec("slurm: {extra: {comment: \"$(x) 'y'\"}}\n", **{"resources.gpus_per_node": 0}))
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_a_name_with_metacharacters_is_refused_by_the_spec():
    with pytest.raises(UserError, match="name"):
        spec(name="x;touch /tmp/pwned")
    with pytest.raises(UserError, match="name"):
        spec(name="x\ny")


@pytest.mark.parametrize("key", sorted(RESERVED_OPTIONS))
def test_options_hpcgpu_sets_are_refused_in_extra(key):
    s = spec(**{"resources.gpus_per_node": 0, "slurm.extra": {key: "1"}})
    with pytest.raises(UserError, match=f"slurm.extra.{key}"):
        params(s)


def test_extra_true_is_a_flag_false_is_left_out_and_underscores_become_dashes():
    text = script(spec(**{"resources.gpus_per_node": 0, "slurm.extra": {"exclusive": True, "requeue_hold": False,
                                                                        "mail_type": "END"}}))
    assert "#SBATCH --exclusive\n" in text and "#SBATCH --mail-type=END\n" in text and "hold" not in text


@pytest.mark.parametrize("run_dir", ["/runs/a\nb", "/runs/%j"])
def test_run_dirs_that_would_break_the_script_are_refused(run_dir):
    with pytest.raises(UserError, match="logging.dir"):
        check_run_dir(run_dir)


def test_the_time_limit_comes_from_the_spec_else_the_partition_the_host_saw():
    gpu = spec(**{"resources.gpus_per_node": 8})
    assert slurm_plan(gpu).request["time_limit_min"] is None  # no sinfo here: unknown, and the dry run says so
    assert slurm_plan(gpu, partitions=SINFO_ROWS).request["time_limit_min"] == 60  # gpu*: default 1:00:00
    cpu = spec(**{"resources.gpus_per_node": 0, "slurm.partition": "cpu"})
    assert slurm_plan(cpu, partitions=SINFO_ROWS).request["time_limit_min"] == UNLIMITED_MIN  # n/a, infinite
    timed = spec(**{"resources.gpus_per_node": 8, "resources.time": "02:00:00"})
    assert slurm_plan(timed, partitions=SINFO_ROWS).request["time_limit_min"] == 120


def test_a_request_that_cannot_fit_is_in_the_plan_and_refused_before_submitting():
    big = slurm_plan(spec(**{"resources.gpus_per_node": 16}), partitions=SINFO_ROWS)
    assert big.request["partition"] == "gpu" and "at most 8" in big.request["fit_problem"]
    assert slurm_plan(spec(**{"resources.gpus_per_node": 8}), partitions=SINFO_ROWS).request["fit_problem"] == ""


def test_grace_is_capped_below_the_warning():
    assert node_grace_s(spec(**{"slurm.signal_before_s": 120, "distributed.stop_grace_s": 120})) == 105
    assert node_grace_s(spec(**{"slurm.signal_before_s": 300, "distributed.stop_grace_s": 60})) == 60


ROWS = ["debug*|2|(null)|4|8000", "gpu|4|gpu:h100:8(S:0-1)|96+|512000", "gpu|2|gpu:h100:8(S:0-1)|96|512000"]


@pytest.mark.parametrize("nodes, gpus, partition, cpus, mem, problem", [
    (2, 0, "debug", 4, "8000M", ""),
    (3, 0, "debug", 1, None, "asked for 3 nodes, partition 'debug' has 2"),
    (1, 1, "debug", 1, None, "asked for 1 GPUs per node, nodes of partition 'debug' have at most 0"),
    (6, 8, "gpu", 96, "500G", ""),
    (1, 8, "gpu", 200, None, ""),  # '96+': nodes of several sizes, left to sbatch
    (1, 0, "nope", 1, None, "partition 'nope' does not exist (partitions: debug, gpu)"),
    (1, 0, "debug", 8, None, "asked for 8 CPUs per node (resources.cpus_per_task; by default 8 per GPU rank, one per CPU rank), "
                             "nodes of partition 'debug' have at most 4"),
    (1, 0, "debug", 1, "9G", "asked for 9G of memory per node, nodes of partition 'debug' have at most 8000M"),
])
def test_partition_fit(nodes, gpus, partition, cpus, mem, problem):
    assert partition_fit_problem(nodes, gpus, partition, ROWS, cpus_per_task=cpus, mem=mem) == problem


def test_partition_fit_without_cpu_and_memory_columns():
    assert partition_fit_problem(2, 0, "debug", ["debug*|2|(null)"], cpus_per_task=64, mem="1T") == ""


@pytest.mark.parametrize("job_id, ok", [("123", True), ("123_4", True), ("123;rm", False), ("", False), ("-1", False)])
def test_job_ids(job_id, ok):
    if ok:
        assert valid_job_id(job_id) == job_id
    else:
        with pytest.raises(UserError):
            valid_job_id(job_id)


def cli(*args, cwd: Path, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HPCGPU_HOME": str(cwd / "home"), **(env or {})}, timeout=60)


@pytest.mark.parametrize("args, key", [
    (["--partition", "debug\ntouch pwned"], "slurm.partition"),
    (["--account", "a\rb"], "slurm.account"),
    (["--name", "x$(touch pwned)"], "name"),
])
def test_cli_refuses_injection_before_anything(tmp_path, args, key):
    out = cli("submit", "slurm", "--nodes", "1", "--nproc-per-node", "1", *args, "--dry-run", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert key in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pwned").exists()


# --- the job step's CPUs (issue 17, item 5) ----------------------------------------------------------


def srun_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("srun "))


def test_the_srun_step_asks_for_the_jobs_cpus_explicitly():
    # Slurm 22.05-23.02: srun does not inherit --cpus-per-task from sbatch (it reads SRUN_CPUS_PER_TASK,
    # not SLURM_CPUS_PER_TASK), so without the flag the agent and all ranks share one core
    text = script(spec(**{"resources.gpus_per_node": 8, "resources.cpus_per_task": 96}))
    assert "#SBATCH --cpus-per-task=96\n" in text
    assert " --cpus-per-task=96 " in srun_line(text)
    cpu = script(spec(**{"resources.gpus_per_node": 0, "resources.procs_per_node": 3}))
    assert " --cpus-per-task=3 " in srun_line(cpu)


def test_gpu_ranks_get_several_cores_each_by_default():
    from hpcgpu.backends.slurm.planner import DEFAULT_CPUS_PER_GPU_RANK

    assert DEFAULT_CPUS_PER_GPU_RANK >= 4  # loader workers, NCCL proxy threads, the agent
    got = params(spec(**{"resources.gpus_per_node": 4}))
    assert got["cpus_per_task"] == 4 * DEFAULT_CPUS_PER_GPU_RANK
    # the partition's nodes say what a fair share is (gpu: 64 CPUs, 8 GPUs -> 8 per GPU at most)
    shared = slurm_plan(spec(**{"resources.gpus_per_node": 2}), partitions=("gpu*|4|gpu:h100:8|16|512000|1:00:00|n/a",))
    assert shared.request["sbatch_parameters"]["cpus_per_task"] == 4  # 16 CPUs / 8 GPUs x 2 ranks
    assert shared.request["fit_problem"] == ""


def test_the_nested_pyxis_step_asks_for_the_same_cpus():
    plan = slurm_plan(spec(**{"resources.gpus_per_node": 2, "resources.cpus_per_task": 12,
                              "container": {"runtime": "pyxis", "image": "nvcr.io#nvidia/pytorch:25.01-py3"}}))
    prefix = list(plan.container_prefix)
    assert "--cpus-per-task=12" in prefix[:prefix.index("--")]
