"""Host checks (/dev/shm, memlock, InfiniBand, hostname, port, checkpoint dir) with controlled inputs."""

import socket
import subprocess

import pytest

from hpcgpu.doctor.checks_cluster import (check_container, check_container_runtimes,
                                          check_slurm_cluster, check_slurm_tools, parse_sinfo)
from hpcgpu.doctor.checks_system import (check_checkpoint_dir, check_hostname, check_infiniband,
                                         check_memlock, check_rendezvous_port, check_shm)
from hpcgpu.doctor.probe import bind_port
from tests.helpers.doctor_fakes import DiskUsage, fake_probe

MiB, GiB = 1 << 20, 1 << 30


def disk(total, free=None):
    return lambda path: DiskUsage(total, total - (free or total), free or total)


@pytest.mark.parametrize("total, free, status", [
    (64 * MiB, None, "fail"),      # docker's default
    (512 * MiB, None, "warn"),
    (16 * GiB, None, "ok"),
    (16 * GiB, 200 * MiB, "warn"),  # big but full of leftovers
])
def test_shm(tmp_path, total, free, status):
    r = check_shm(fake_probe(tmp_path, disk_usage=disk(total, free)))
    assert r.status == status, r
    if status == "fail":
        assert "--ipc=host" in r.hint and "--shm-size" in r.hint


def test_shm_missing(tmp_path):
    def missing(path):
        raise FileNotFoundError(path)

    assert check_shm(fake_probe(tmp_path, disk_usage=missing)).status == "fail"


def test_shm_reads_dev_shm_under_the_root(tmp_path):
    seen = []
    check_shm(fake_probe(tmp_path, disk_usage=lambda p: seen.append(p) or DiskUsage(GiB, 0, GiB)))
    assert seen == [str(tmp_path / "dev/shm")]


def make_ib(root, name="mlx5_0", state="4: ACTIVE", layer="InfiniBand", rate="400 Gb/sec (4X NDR)"):
    port = root / "sys/class/infiniband" / name / "ports/1"
    port.mkdir(parents=True)
    (port / "state").write_text(state + "\n")
    (port / "link_layer").write_text(layer + "\n")
    (port / "rate").write_text(rate + "\n")


@pytest.mark.parametrize("limit, ib, status", [
    (-1, False, "ok"), (-1, True, "ok"), (64 * 1024, False, "ok"),
    (64 * 1024, True, "fail"), (8 * GiB, True, "warn"),
])
def test_memlock(tmp_path, limit, ib, status):
    if ib:
        make_ib(tmp_path)
    r = check_memlock(fake_probe(tmp_path, memlock=lambda: limit))
    assert r.status == status, r
    if status != "ok":
        assert "memlock" in r.hint


def test_infiniband(tmp_path):
    assert check_infiniband(fake_probe(tmp_path)).status == "skip"
    make_ib(tmp_path)
    make_ib(tmp_path, "mlx5_1", state="1: DOWN")
    r = check_infiniband(fake_probe(tmp_path))
    assert r.status == "ok" and r.detail == "active: mlx5_0/1 400 Gb/sec (4X NDR) (InfiniBand)"


def test_infiniband_all_ports_down_warns(tmp_path):
    make_ib(tmp_path, state="1: DOWN")
    assert check_infiniband(fake_probe(tmp_path)).status == "warn"


def unresolvable(host):
    raise socket.gaierror(-2, "Name or service not known")


TWO_NODES = {"SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[01-02]"}


@pytest.mark.parametrize("resolve, env, status", [
    (lambda h: "10.0.0.11", {}, "ok"),
    (lambda h: "127.0.1.1", {}, "ok"),
    ({"gpu01": "127.0.1.1", "gpu02": "10.0.0.12"}.get, TWO_NODES, "warn"),
    ({"gpu01": "127.0.1.1"}.get, TWO_NODES, "warn"),  # gpu02 unresolvable: assume remote
    (lambda h: "127.0.0.1", TWO_NODES, "ok"),  # a one-machine dev cluster
    (unresolvable, {}, "fail"),
])
def test_hostname(tmp_path, resolve, env, status):
    assert check_hostname(fake_probe(tmp_path, resolve=resolve, env=env)).status == status


def test_rendezvous_port(tmp_path):
    r = check_rendezvous_port(fake_probe(tmp_path))
    assert (r.status, r.detail) == ("ok", "can listen on 10.0.0.11:41000")


def test_rendezvous_port_cannot_listen(tmp_path):
    def refuse(host, port):
        raise OSError(99, "Cannot assign requested address")

    assert check_rendezvous_port(fake_probe(tmp_path, bind=refuse)).status == "fail"


def test_master_port_taken_warns(tmp_path):
    def bind(host, port):
        if port == 29500:
            raise OSError(98, "Address already in use")
        return 41000

    r = check_rendezvous_port(fake_probe(tmp_path, bind=bind, env={"MASTER_PORT": "29500"}))
    assert r.status == "warn" and "MASTER_PORT=29500 is taken" in r.detail


def test_rendezvous_port_for_real(tmp_path):
    r = check_rendezvous_port(fake_probe(tmp_path, resolve=lambda h: "127.0.0.1", bind=bind_port))
    assert r.status == "ok" and r.data["free_port"] > 0


def test_checkpoint_dir_to_be_created(tmp_path):
    r = check_checkpoint_dir(fake_probe(tmp_path, checkpoint_dir=tmp_path / "a" / "b"))
    assert r.status == "ok" and f"(to be created in {tmp_path})" in r.detail
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())  # nothing left behind


@pytest.mark.parametrize("free, status", [(500 * MiB, "fail"), (5 * GiB, "warn"), (50 * GiB, "ok")])
def test_checkpoint_dir_free_space(tmp_path, free, status):
    r = check_checkpoint_dir(fake_probe(tmp_path, disk_usage=disk(100 * GiB, free)))
    assert r.status == status


def test_checkpoint_dir_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("")
    assert check_checkpoint_dir(fake_probe(tmp_path)).status == "fail"


def test_checkpoint_dir_not_writable(tmp_path):
    # /proc refuses new files even for root, unlike a chmod 500 directory
    r = check_checkpoint_dir(fake_probe(tmp_path, checkpoint_dir="/proc/hpcgpu-runs"))
    assert r.status == "fail" and r.detail.startswith("cannot write in /proc")


@pytest.mark.parametrize("files, env, expected", [
    ((), {}, "not inside a container"),
    ((".dockerenv",), {}, "inside docker (/.dockerenv)"),
    (("run/.containerenv",), {}, "inside podman (/run/.containerenv)"),
    ((), {"APPTAINER_CONTAINER": "/img/t.sif"}, "inside apptainer (APPTAINER_CONTAINER=/img/t.sif)"),
    ((), {"SINGULARITY_CONTAINER": "t.sif"}, "inside singularity (SINGULARITY_CONTAINER=t.sif)"),
])
def test_container(tmp_path, files, env, expected):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    assert check_container(fake_probe(tmp_path, env=env)).detail == expected


def test_container_runtimes(tmp_path):
    assert check_container_runtimes(fake_probe(tmp_path)).status == "skip"
    which = {"podman": "/usr/bin/podman", "apptainer": "/opt/bin/apptainer"}.get
    r = check_container_runtimes(fake_probe(tmp_path, which=which))
    assert (r.status, r.detail) == ("ok", "apptainer, podman")


def fake_run(stdout="", rc=0, hang=False):
    def run(argv, timeout=0, env=None):
        if hang:
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, rc, stdout, "")
    return run


ALL_TOOLS = lambda name: f"/usr/bin/{name}"  # noqa: E731


def test_slurm_tools(tmp_path):
    assert check_slurm_tools(fake_probe(tmp_path)).status == "skip"
    r = check_slurm_tools(fake_probe(tmp_path, which=ALL_TOOLS, run=fake_run("slurm 23.11.4\n")))
    assert r.status == "ok" and r.detail.startswith("slurm 23.11.4")
    partial = {"srun": "/usr/bin/srun"}.get
    assert check_slurm_tools(fake_probe(tmp_path, which=partial)).status == "warn"


SINFO = "debug* up 2 idle\ngpu up 3 mixed\ngpu up 1 drained*\nold down 4 idle\n"


def test_parse_sinfo():
    assert parse_sinfo(SINFO) == {"debug*": {"idle": 2}, "gpu": {"mixed": 3, "drained": 1},
                                  "old": {"down": 4}}


@pytest.mark.parametrize("run, status, text", [
    (fake_run(SINFO), "ok", "debug*: 2 idle; gpu: 1 drained, 3 mixed; old: 4 down"),
    (fake_run("old up 2 down*\n"), "warn", "no usable node"),
    (fake_run(""), "warn", "no partition"),
    (fake_run("sinfo: error: Unable to contact slurm controller (connect failure)\n", rc=1),
     "fail", "sinfo failed: sinfo: error: Unable to contact slurm controller"),
    (fake_run(hang=True), "fail", "did not answer within 10 s"),
])
def test_slurm_cluster(tmp_path, run, status, text):
    r = check_slurm_cluster(fake_probe(tmp_path, which=ALL_TOOLS, run=run))
    assert r.status == status and text in r.detail, r


def test_slurm_cluster_without_sinfo_skips(tmp_path):
    assert check_slurm_cluster(fake_probe(tmp_path)).status == "skip"
