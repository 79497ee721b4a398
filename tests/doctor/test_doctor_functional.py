"""The all-reduce checks with the launch faked at the process boundary (the real one: test_doctor_run.py)."""

import json
import subprocess

import pytest

from hpcgpu.doctor.allreduce_worker import RESULT_MARKER, bus_bandwidth
from hpcgpu.doctor.functional import (check_allreduce, nccl_warnings, parse_transports, plan_local,
                                      summarize_allreduce)
from hpcgpu.doctor.checks_env import expand_nodelist
from hpcgpu.doctor.slurm_allreduce import (check_allreduce_slurm, node_command, rendezvous_port,
                                           srun_argv)
from tests.helpers.doctor_fakes import CUDA_TORCH, FakeNvml, fake_probe, h100s

NCCL_LOG = """\
gpu01:1234:1300 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
gpu01:1234:1300 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/IPC
gpu01:1235:1301 [1] NCCL INFO Channel 00/0 : 1[1] -> 0[0] via SHM/direct/direct
gpu01:1234:1300 [0] NCCL INFO Channel 00/0 : 2[0] -> 0[0] [receive] via NET/IB/0/GDRDMA
gpu01:1234:1300 [0] NCCL INFO Channel 00/0 : 0[0] -> 2[0] [send] via NET/Socket/0
gpu01:1234:1300 [0] NCCL WARN NET/Socket : peer 10.0.0.12 closed the connection
"""


def worker_result(backend="gloo", world=2, nodes=1, correct=True, device="cpu"):
    rows = [{"bytes": b, "time_us": 100.0, "algbw_gbs": 1.0, "busbw_gbs": bus_bandwidth(1.0, world)}
            for b in (65536, 1048576, 16777216)]
    return {"backend": backend, "world_size": world, "device": device, "hosts": ["n1"] * world,
            "nodes": nodes, "correct": correct, "torch": "2.13.0", "nccl": None, "results": rows}


def test_bus_bandwidth_follows_nccl_tests():
    assert bus_bandwidth(10.0, 2) == 10.0
    assert bus_bandwidth(10.0, 8) == 17.5
    assert bus_bandwidth(10.0, 1) == 0.0


def test_parse_transports_and_warnings():
    assert parse_transports(NCCL_LOG) == {"P2P/CUMEM": 1, "P2P/IPC": 1, "SHM": 1, "NET/IB": 1,
                                          "NET/Socket": 1}
    assert nccl_warnings(NCCL_LOG) == ["NET/Socket : peer 10.0.0.12 closed the connection"]
    assert parse_transports("no nccl here") == {}


def test_summary_of_a_gloo_run():
    r = summarize_allreduce(worker_result(), "")
    assert r.status == "ok"
    assert r.detail == ("gloo, 2 ranks on 1 node(s), cpu: busbw (GB/s) "
                        "64KiB: 1.00, 1MiB: 1.00, 16MiB: 1.00")


def test_one_rank_measures_no_bus_bandwidth():
    r = summarize_allreduce(worker_result("nccl", 1, device="NVIDIA H100 80GB HBM3"), "")
    assert r.status == "ok"
    assert r.detail == ("nccl, 1 rank on 1 node(s), NVIDIA H100 80GB HBM3: one rank: no inter-GPU "
                        "traffic to measure")
    assert "0.00" not in r.detail
    assert [row["busbw_gbs"] for row in r.data["results"]] == [None, None, None]
    assert summarize_allreduce(worker_result("gloo", 1), "").detail.endswith(
        "no inter-process traffic to measure")


def test_wrong_result_fails():
    assert summarize_allreduce(worker_result(correct=False), "").status == "fail"


def test_local_gpus_over_sockets_warn():
    res = worker_result("nccl", 2, device="NVIDIA H100 80GB HBM3")
    r = summarize_allreduce(res, "x [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via NET/Socket/0\n")
    assert r.status == "warn" and "via NET/Socket" in r.detail


def test_nccl_warnings_warn():
    r = summarize_allreduce(worker_result("nccl", 4, nodes=2), NCCL_LOG)
    assert r.status == "warn" and "peer 10.0.0.12 closed" in r.detail


def test_plan_local(tmp_path):
    assert plan_local(fake_probe(tmp_path)) == ("gloo", 2, "")
    assert plan_local(fake_probe(tmp_path, nproc=3)) == ("gloo", 3, "")
    gpus = dict(nvml=FakeNvml(gpus=h100s(4)), torch_loader=lambda: dict(CUDA_TORCH))
    assert plan_local(fake_probe(tmp_path, **gpus)) == ("nccl", 4, "")
    visible = fake_probe(tmp_path, env={"CUDA_VISIBLE_DEVICES": "1,2"}, **gpus)
    assert plan_local(visible) == ("nccl", 2, "")
    backend, _, note = plan_local(fake_probe(tmp_path, nvml=FakeNvml(gpus=h100s(2))))
    assert backend == "gloo" and "2 GPU(s) unusable by torch" in note


class FakeLaunch:
    """Records the command; writes the worker's JSON where --out points, like rank 0 would."""

    def __init__(self, result=None, output="", rc=0, hang=False):
        self.result, self.output, self.rc, self.hang, self.argv = result, output, rc, hang, None

    def __call__(self, argv, timeout=0, env=None):
        self.argv, self.env = argv, env
        if self.hang:
            raise subprocess.TimeoutExpired(argv, timeout, output="rank 1 stuck in all_reduce\n")
        out = argv[argv.index("--out") + 1] if "--out" in argv else "-"  # srun: node side prints
        if self.result is not None and out != "-":
            with open(out, "w") as f:
                json.dump(self.result, f)
        elif self.result is not None:
            self.output += RESULT_MARKER + json.dumps(self.result) + "\n"
        return subprocess.CompletedProcess(argv, self.rc, self.output, "")


def test_allreduce_launches_torchrun_with_a_free_port(tmp_path):
    launch = FakeLaunch(worker_result())
    r = check_allreduce(fake_probe(tmp_path, run=launch))
    assert r.status == "ok" and r.data["world_size"] == 2
    argv = launch.argv
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    assert "--rdzv-endpoint=127.0.0.1:0" in argv and "--nproc-per-node=2" in argv
    assert argv[argv.index("--backend") + 1] == "gloo"
    assert launch.env["NCCL_DEBUG"] == "INFO"


def test_allreduce_on_gpus_uses_nccl(tmp_path):
    launch = FakeLaunch(worker_result("nccl", 4, device="NVIDIA H100 80GB HBM3"), NCCL_LOG[:200])
    p = fake_probe(tmp_path, run=launch, nvml=FakeNvml(gpus=h100s(4)),
                   torch_loader=lambda: dict(CUDA_TORCH))
    r = check_allreduce(p)
    assert "--nproc-per-node=4" in launch.argv and "nccl" in launch.argv
    assert r.status == "ok" and "via P2P/CUMEM, P2P/IPC" in r.detail


def test_allreduce_failure_shows_the_error(tmp_path):
    out = "Traceback...\nRuntimeError: Connection reset by peer\nexit\n"
    r = check_allreduce(fake_probe(tmp_path, run=FakeLaunch(None, out, rc=1)))
    assert r.status == "fail"
    assert r.detail == "all-reduce failed (exit status 1): RuntimeError: Connection reset by peer"
    assert r.data["output_tail"][-1] == "exit"


def test_result_then_a_failed_exit_warns(tmp_path):
    r = check_allreduce(fake_probe(tmp_path, run=FakeLaunch(worker_result(), "Segfault\n", rc=1)))
    assert r.status == "warn" and "exited with status 1" in r.detail
    assert r.data["output_tail"] == ["Segfault"]


def test_allreduce_timeout_is_a_failure(tmp_path):
    r = check_allreduce(fake_probe(tmp_path, run=FakeLaunch(hang=True), timeout=5))
    assert r.status == "fail" and r.detail.startswith("no result within 5 s")


def test_allreduce_too_many_ranks_for_the_gpus(tmp_path):
    p = fake_probe(tmp_path, nproc=8, nvml=FakeNvml(gpus=h100s(2)),
                   torch_loader=lambda: dict(CUDA_TORCH))
    r = check_allreduce(p)
    assert r.status == "fail" and "more than the 2 visible GPU(s)" in r.detail


def test_allreduce_skips_without_torch(tmp_path):
    r = check_allreduce(fake_probe(tmp_path, torch_loader=lambda: {"error": "ImportError: torch"}))
    assert r.status == "skip"


@pytest.mark.parametrize("text, hosts", [
    ("node[1-2]", ["node1", "node2"]),
    ("gpu[01-03,7],login1", ["gpu01", "gpu02", "gpu03", "gpu7", "login1"]),
    ("a1", ["a1"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
])
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


def test_rendezvous_port_is_stable_and_in_range():
    assert rendezvous_port("123", "0") == rendezvous_port("123", "0")
    assert rendezvous_port("123", "0") != rendezvous_port("123", "1")
    assert all(20000 <= rendezvous_port(str(j), "4294967294") < 40000 for j in range(0, 10**6, 997))


def test_node_command():
    env = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "node[1-2]",
           "SLURMD_NODENAME": "node2", "SLURM_GPUS_ON_NODE": "8"}
    cmd = node_command(env, 0)
    assert "--nnodes=2" in cmd and "--nproc-per-node=8" in cmd
    assert f"--rdzv-endpoint=node1:{rendezvous_port('77', '0')}" in cmd
    assert "--rdzv-conf=is_host=0" in cmd and cmd[cmd.index("--out") + 1] == "-"
    assert "--rdzv-conf=is_host=1" in node_command({**env, "SLURMD_NODENAME": "node1"}, 0)
    assert "--nproc-per-node=1" in node_command({**env, "SLURM_GPUS_ON_NODE": ""}, 0)


def test_slurm_allreduce(tmp_path):
    launch = FakeLaunch(worker_result(nodes=2))
    r = check_allreduce_slurm(fake_probe(tmp_path, run=launch, which=lambda n: f"/usr/bin/{n}"))
    assert r.status == "ok" and "2 node(s)" in r.detail
    assert launch.argv[:4] == srun_argv(None)[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1",
                                                      "--kill-on-bad-exit=1"]


def test_slurm_allreduce_on_one_node_warns(tmp_path):
    launch = FakeLaunch(worker_result(nodes=1))
    r = check_allreduce_slurm(fake_probe(tmp_path, run=launch, which=lambda n: f"/usr/bin/{n}"))
    assert r.status == "warn"


def test_slurm_allreduce_failures(tmp_path):
    assert check_allreduce_slurm(fake_probe(tmp_path)).status == "fail"  # no srun
    err = "srun: error: Unable to allocate resources: Invalid partition name specified\n"
    p = fake_probe(tmp_path, run=FakeLaunch(None, err, rc=1), which=lambda n: f"/usr/bin/{n}")
    r = check_allreduce_slurm(p)
    assert r.status == "fail" and "Invalid partition" in r.detail and "SLURM_PARTITION" in r.hint


def test_version_text():
    from hpcgpu.doctor.allreduce_worker import version_text

    assert version_text((2, 27, 3)) == "2.27.3" and version_text(22105) == "22105"


def test_run_command_kills_the_whole_process_group_on_timeout():
    import time
    from pathlib import Path

    from hpcgpu.doctor.probe import run_command

    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as e:
        # the grandchild stands in for torchrun's ranks
        run_command(["bash", "-c", "sleep 60 & echo $!; wait"], timeout=1)
    assert time.monotonic() - start < 10
    grandchild = int(e.value.output.split()[0])
    time.sleep(0.2)
    status = Path(f"/proc/{grandchild}/status")
    # gone, or a zombie waiting for an init that does not reap
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_run_command_merges_output():
    from hpcgpu.doctor.probe import run_command

    proc = run_command(["bash", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (proc.returncode, proc.stdout) == (3, "out\nerr\n")
