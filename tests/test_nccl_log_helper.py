"""The GPU tier's reading of NCCL warnings: benign ones pass, real problems and other warnings do not."""

import pytest

from hpcgpu.doctor.functional import nccl_warnings, summarize_allreduce
from tests.helpers.nccl_log import allreduce_is_healthy, problem_warnings


def result(world=2):
    rows = [{"bytes": 1 << 20, "time_us": 10.0, "algbw_gbs": 100.0, "busbw_gbs": 100.0}]
    return {"backend": "nccl", "world_size": world, "device": "NVIDIA H100 80GB HBM3",
            "hosts": ["n1"] * world, "nodes": 1, "correct": True, "torch": "2.13.0", "nccl": "2.27.3",
            "results": rows}


def check_of(log: str, **res) -> dict:
    return summarize_allreduce({**result(), **res}, log).as_dict()


@pytest.mark.parametrize("line", [
    "gpu01:1:2 [0] NCCL WARN Could not find real path of /sys/class/net/eth0/device",
    "gpu01:1:2 [0] NCCL WARN NVLS multicast support is not available on dev 0",
    "gpu01:1:2 [0] NCCL WARN Failed to open libibverbs.so[.1]",
])
def test_benign_warnings_pass(line):
    assert problem_warnings(nccl_warnings(line)) == []
    assert allreduce_is_healthy(check_of(line + "\n"))


@pytest.mark.parametrize("line", [
    "gpu01:1:2 [0] NCCL WARN Cuda failure 'out of memory'",
    "gpu01:1:2 [0] NCCL WARN NET/Socket : peer 10.0.0.12 closed the connection",
    "gpu01:1:2 [0] NCCL WARN Call to connect returned Connection refused, retrying",
    "gpu01:1:2 [1] NCCL WARN [Service thread] Error encountered progressing operation=Connect",
    "gpu01:1:2 [0] NCCL WARN Watchdog timed out",
])
def test_real_problems_fail(line):
    assert problem_warnings(nccl_warnings(line)) != []
    assert not allreduce_is_healthy(check_of(line + "\n"))


def test_other_warnings_and_failures_still_fail():
    sockets = "x [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via NET/Socket/0\n"
    assert not allreduce_is_healthy(check_of(sockets))
    assert not allreduce_is_healthy(check_of("", correct=False))
    assert allreduce_is_healthy(check_of(""))
