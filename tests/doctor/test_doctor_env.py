"""CUDA_VISIBLE_DEVICES, Slurm task/GPU variables and NCCL_* checks, table-driven over env dicts."""

import pytest

from hpcgpu.doctor.checks_env import (check_cuda_visible_devices, check_nccl_env, check_slurm_gpus,
                                      check_slurm_tasks, interface_matches, parse_visible_devices,
                                      tasks_per_node)
from tests.helpers.doctor_fakes import FakeNvml, fake_probe, h100s

UUIDS = [g.uuid for g in h100s(4)]


def probe(tmp_path, env, gpus=4, nics=("eth0", "ib0", "lo"), ib=()):
    for name in nics:
        (tmp_path / "sys/class/net" / name).mkdir(parents=True, exist_ok=True)
    for name in ib:
        (tmp_path / "sys/class/infiniband" / name).mkdir(parents=True, exist_ok=True)
    nvml = FakeNvml(gpus=h100s(gpus)) if gpus else FakeNvml(init_error="NVML Shared Library Not Found")
    return fake_probe(tmp_path, env=env, nvml=nvml)


@pytest.mark.parametrize("value, chosen, problem", [
    ("0,1", [0, 1], ""),
    ("3,1", [3, 1], ""),
    ("", [], ""),
    ("0,7,1", [0], "index 7 does not exist (4 GPU(s))"),
    ("1,1", [1], "GPU 1 is listed twice"),
    ("-1", [], "index -1 does not exist (4 GPU(s))"),
    (f"{UUIDS[2]},{UUIDS[0][:12]}", [2, 0], ""),
    ("GPU-deadbeef", [], "'GPU-deadbeef' matches no GPU UUID"),
    ("NoDevFiles", [], "'NoDevFiles' matches no GPU UUID"),
])
def test_parse_visible_devices(value, chosen, problem):
    assert parse_visible_devices(value, UUIDS) == (chosen, problem)


@pytest.mark.parametrize("env, gpus, status, text", [
    ({}, 4, "ok", "unset: all 4 GPU(s) visible"),
    ({}, 0, "skip", "unset, and no GPU"),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 4, "ok", "'0,1': 2 of 4 GPU(s) visible"),
    ({"CUDA_VISIBLE_DEVICES": ""}, 4, "fail", "'' hides every GPU"),
    ({"CUDA_VISIBLE_DEVICES": "4,5"}, 4, "fail", "hides every GPU: index 4 does not exist"),
    ({"CUDA_VISIBLE_DEVICES": "0,9"}, 4, "fail", "CUDA stops there and sees only [0]"),
    ({"CUDA_VISIBLE_DEVICES": "0"}, 0, "skip", "no GPU to compare"),
])
def test_cuda_visible_devices(tmp_path, env, gpus, status, text):
    r = check_cuda_visible_devices(probe(tmp_path, env, gpus))
    assert r.status == status and text in r.detail, r


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_NTASKS_PER_NODE": "4"}, 4),
    ({"SLURM_TASKS_PER_NODE": "1(x2)"}, 1),
    ({"SLURM_TASKS_PER_NODE": "2(x3),1"}, 2),
    ({}, None),
])
def test_tasks_per_node(env, expected):
    assert tasks_per_node(env) == expected


JOB = {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "2"}


@pytest.mark.parametrize("env, status", [
    ({}, "skip"),
    ({**JOB, "SLURM_NTASKS_PER_NODE": "1"}, "ok"),
    ({**JOB, "SLURM_TASKS_PER_NODE": "1(x2)"}, "ok"),
    ({**JOB, "SLURM_NTASKS_PER_NODE": "4"}, "fail"),   # the classic: one task per GPU
    ({**JOB, "SLURM_TASKS_PER_NODE": "8(x2)"}, "fail"),
    (JOB, "warn"),
])
def test_slurm_tasks(tmp_path, env, status):
    r = check_slurm_tasks(probe(tmp_path, env))
    assert r.status == status, r
    if status == "fail":
        assert "--ntasks-per-node=1" in r.hint


@pytest.mark.parametrize("env, gpus, status, text", [
    ({}, 4, "skip", "not inside a Slurm job"),
    ({**JOB, "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_GPUS": "0,1,2,3"}, 4, "ok", "4 GPU(s) allocated"),
    ({**JOB, "SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, 4, "ok", "2 visible"),
    ({**JOB, "SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0"}, 4, "fail", "only 1 visible"),
    ({**JOB, "SLURM_GPUS_ON_NODE": "4"}, 0, "fail", "only 0 visible"),
    ({**JOB, "SLURM_GPUS_ON_NODE": "2"}, 4, "warn", "but 4 are visible"),
    (JOB, 4, "warn", "asked for no GPU, yet 4"),
    (JOB, 0, "skip", "asked for no GPU and none"),
])
def test_slurm_gpus(tmp_path, env, gpus, status, text):
    r = check_slurm_gpus(probe(tmp_path, env, gpus))
    assert r.status == status and text in r.detail, r


def test_partial_node_job_under_a_cgroup(tmp_path):
    # 2 of 8 GPUs held; ConstrainDevices denies the other 6 to NVML and Slurm renumbers to 0,1
    gpus = h100s(8)
    for g in gpus[:6]:
        g.accessible = False
    env = {**JOB, "SLURM_GPUS_ON_NODE": "2", "SLURM_JOB_GPUS": "6,7", "CUDA_VISIBLE_DEVICES": "0,1"}
    p = fake_probe(tmp_path, env=env, nvml=FakeNvml(gpus=gpus))
    r = check_slurm_gpus(p)
    assert (r.status, r.detail) == ("ok", "2 GPU(s) allocated (SLURM_JOB_GPUS=6,7), 2 visible")
    r = check_cuda_visible_devices(p)
    assert (r.status, r.detail) == ("ok", "'0,1': 2 of 2 GPU(s) visible")


@pytest.mark.parametrize("spec, matched", [
    ("eth", ["eth0"]),
    ("eth0,ib", ["eth0", "ib0"]),
    ("=eth", []),
    ("=eth0", ["eth0"]),
    ("^lo,docker", ["eth0", "ib0"]),
    ("enp", []),
])
def test_interface_matches(spec, matched):
    assert interface_matches(spec, ["eth0", "ib0", "lo"]) == matched


@pytest.mark.parametrize("env, ib, status, text", [
    ({}, (), "ok", "no NCCL_*/GLOO_* variable set"),
    ({"NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": "eth0"}, (), "ok", "NCCL_DEBUG=INFO, NCCL_SOCKET_IFNAME=eth0"),
    ({"NCCL_SOCKET_IFNAME": "enp65s0"}, (), "fail", "NCCL_SOCKET_IFNAME=enp65s0 matches no interface"),
    ({"GLOO_SOCKET_IFNAME": "bond0"}, (), "fail", "GLOO_SOCKET_IFNAME=bond0 matches no interface"),
    ({"NCCL_SOCKET_IFNAME": "^docker,lo"}, (), "ok", ""),
    ({"NCCL_P2P_DISABLE": "1"}, (), "warn", "NCCL_P2P_DISABLE=1"),
    ({"NCCL_IB_DISABLE": "1"}, ("mlx5_0",), "warn", "although InfiniBand is present (mlx5_0)"),
    ({"NCCL_IB_DISABLE": "1"}, (), "ok", "NCCL_IB_DISABLE=1"),
    ({"NCCL_IB_HCA": "mlx5_4:1"}, ("mlx5_0",), "warn", "matches no InfiniBand device"),
    ({"NCCL_IB_HCA": "mlx5"}, ("mlx5_0",), "ok", ""),
    ({"NCCL_DEBUG": "TRACE"}, (), "warn", "TRACE"),
    ({"NCCL_ALGO": "Tree"}, (), "warn", "overrides NCCL's tuning"),
    ({"NCCL_SHM_DISABLE": "1", "NCCL_SOCKET_IFNAME": "nope"}, (), "fail", "NCCL_SHM_DISABLE=1"),
])
def test_nccl_env(tmp_path, env, ib, status, text):
    r = check_nccl_env(probe(tmp_path, env, ib=ib))
    assert r.status == status and text in r.detail, r
    if status != "ok":
        assert r.hint


def test_nccl_env_without_sysfs(tmp_path):
    p = fake_probe(tmp_path / "empty", env={"NCCL_SOCKET_IFNAME": "eth0"})
    r = check_nccl_env(p)
    assert r.status == "fail" and "matches no interface" in r.detail
