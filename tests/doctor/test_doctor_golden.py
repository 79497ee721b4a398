"""The doctor's three renderings (table, JSON, markdown report) pinned from a fixed list of results."""

import json

from hpcgpu.doctor.render import render_json, render_report, render_table
from hpcgpu.doctor.result import CheckResult
from tests.helpers.golden import assert_golden

VERSION = "0.0.0-golden"
RESULTS = [
    CheckResult("python", "ok", "3.11.7 (/usr/bin/python3)", data={"version": "3.11.7"}),
    CheckResult("gpus", "ok", "8 x NVIDIA H100 80GB HBM3 (80 GiB); driver 550.54.15",
                data={"driver": "550.54.15"}),
    CheckResult("gpu_models", "warn", "mixed GPU models on one node: 7 x NVIDIA H100 80GB HBM3, "
                "1 x NVIDIA L40S", "every rank waits for the slowest GPU and batch size must fit "
                "the smallest: set CUDA_VISIBLE_DEVICES to one model (or Slurm --gpus=<type>:N)"),
    CheckResult("gpu_ecc", "fail", "uncorrected ECC errors since boot: GPU3: 2",
                "drain this node and tell the admins", data={"uncorrected": {"3": 2}}),
    CheckResult("slurm_tasks", "skip", "not inside a Slurm job"),
    CheckResult("nccl_env", "fail", "NCCL_SOCKET_IFNAME=enp65s0 matches no interface (eth0, lo)",
                "set NCCL_SOCKET_IFNAME to one of eth0, lo (see `ip -br addr`) or unset it",
                data={"set": {"NCCL_SOCKET_IFNAME": "enp65s0"}}),
    CheckResult("shm", "ok", "/dev/shm 16 GiB (16 GiB free)", data={"total": 17179869184}),
    CheckResult("allreduce", "ok", "nccl, 8 ranks on 1 node(s), NVIDIA H100 80GB HBM3: busbw "
                "(GB/s) 1MiB: 21.40, 32MiB: 255.10, 256MiB: 368.90; via P2P/CUMEM, NVLS",
                data={"transports": {"P2P/CUMEM": 56, "NVLS": 8}, "world_size": 8}),
    CheckResult("table|pipe", "warn", "a detail with | pipes", "a hint with | pipes"),
]


def test_table():
    assert_golden("doctor_table.txt", render_table(RESULTS, width=100))


def test_table_narrow_terminal():
    assert_golden("doctor_table_narrow.txt", render_table(RESULTS[:4], width=60))


def test_json():
    text = render_json(RESULTS, VERSION)
    assert_golden("doctor.json", text)
    data = json.loads(text)
    assert data["ok"] is False and data["summary"] == {"ok": 4, "warn": 2, "fail": 2, "skip": 1}


def test_report():
    assert_golden("doctor_report.md", render_report(RESULTS, VERSION))
