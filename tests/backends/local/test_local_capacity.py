"""A local run refuses more ranks than this machine can hold, naming the limit and its number;
oversubscribing cores within reason stays possible. Facts are built by hand (the planner is pure),
and the CLI is checked once on this machine's real limits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpcgpu.contract.errors import UserError
from tests.helpers.plans import plan_for
from tests.helpers.relkit import base_env


def cpu_spec(nproc: int) -> str:
    return f"resources: {{gpus_per_node: 0, procs_per_node: {nproc}}}\n"


def test_oversubscribed_cores_are_fine_up_to_32_ranks_per_core():
    assert plan_for(cpu_spec(8), cpus=2).world_size == 8  # 8 CPU ranks on 2 cores: testing, allowed
    assert plan_for(cpu_spec(64), cpus=2).world_size == 64


def test_more_than_32_ranks_per_core_is_refused_with_the_numbers():
    with pytest.raises(UserError) as info:
        plan_for(cpu_spec(65), cpus=2)
    assert str(info.value.message) == ("resources.procs_per_node (--nproc) asks for 65 ranks on this machine, more "
                                       "than it can hold: 2 CPU core(s) x 32 ranks per core = 64")
    assert "--nproc 64" in info.value.hint and "hpcgpu submit slurm" in info.value.hint


def test_the_open_file_limit_binds_when_it_is_tighter():
    assert plan_for(cpu_spec(64), cpus=64, max_open_files=256).world_size == 64  # (256 - 64) // 3 = 64
    with pytest.raises(UserError, match=r"the open-file limit \(ulimit -n\) is 256: .* so at most 64 ranks") as info:
        plan_for(cpu_spec(65), cpus=64, max_open_files=256)
    assert "raise the limit" in info.value.hint


def test_the_process_limit_counts_threads():
    assert plan_for(cpu_spec(25), cpus=64, max_user_procs=100).world_size == 25
    with pytest.raises(UserError, match=r"the process limit \(ulimit -u\) is 100 processes and threads: each rank "
                                        r"runs at least 4, so at most 25 ranks"):
        plan_for(cpu_spec(26), cpus=64, max_user_procs=100)


def test_unknown_limits_are_not_checked():
    assert plan_for(cpu_spec(4096)).world_size == 4096  # hand-made facts without limits: nothing to check


def test_gpu_ranks_name_the_gpu_key():
    with pytest.raises(UserError, match=r"resources.gpus_per_node \(--gpus\) asks for 8 ranks"):
        plan_for("resources: {gpus_per_node: 8}\n", visible_gpus=8, cpus=1, max_open_files=80)


def run_local(tmp_path, *args):
    env = base_env(tmp_path / "home")
    return subprocess.run([sys.executable, "-m", "hpcgpu", "run", "local", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_nproc_100000_is_refused_with_exit_2_and_nothing_created(tmp_path):
    out = run_local(tmp_path, "--nproc", "100000")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "resources.procs_per_node: Input should be less than or equal to 4096" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()


def test_more_ranks_than_this_machine_holds_is_refused_with_its_limit(tmp_path):
    cores = len(os.sched_getaffinity(0))
    if cores * 32 >= 4096:
        pytest.skip(f"{cores} cores hold every count the spec allows")
    out = run_local(tmp_path, "--nproc", "4096", "--dry-run")  # even a dry run: it shows what would run
    assert out.returncode == 2, out.stdout + out.stderr
    assert (f"resources.procs_per_node (--nproc) asks for 4096 ranks on this machine, more than it can hold: "
            f"{cores} CPU core(s) x 32 ranks per core = {cores * 32}") in out.stderr or "ulimit" in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()
