"""GPU checks against a fake NVML: 2 H100s, mixed models, busy GPUs, ECC errors, modes, topology."""

import inspect

import pytest

from hpcgpu.doctor.checks_gpu import (check_gpu_ecc, check_gpu_load, check_gpu_models,
                                      check_gpu_modes, check_gpu_topology, check_gpus)
from hpcgpu.doctor.probe import Probe
from tests.helpers.doctor_fakes import (GiB, FakeGpu, FakeNvml, FakeNVMLError, fake_probe, h100s,
                                       no_permission, pcie_gpu)

GPU_CHECKS = [check_gpus, check_gpu_models, check_gpu_load, check_gpu_ecc, check_gpu_modes,
              check_gpu_topology]


def probe(tmp_path, gpus, **nvml_kw):
    return fake_probe(tmp_path, nvml=FakeNvml(gpus=gpus, **nvml_kw))


def test_two_h100s(tmp_path):
    r = check_gpus(probe(tmp_path, h100s(2)))
    assert r.status == "ok"
    assert r.detail == "2 x NVIDIA H100 80GB HBM3 (80 GiB); driver 550.54.15"
    assert [g["index"] for g in r.data["gpus"]] == [0, 1]


@pytest.mark.parametrize("nvml, reason", [
    (FakeNvml(init_error="NVML Shared Library Not Found"), "no NVIDIA driver"),
    (FakeNvml(gpus=[]), "found no NVIDIA GPU"),
])
def test_every_gpu_check_skips_without_gpus(tmp_path, nvml, reason):
    p = fake_probe(tmp_path, nvml=nvml)
    for fn in GPU_CHECKS:
        r = fn(p)
        assert r.status == "skip" and reason in r.detail, (fn.check_name, r)


def test_missing_pynvml_skips(tmp_path, monkeypatch):
    import hpcgpu.doctor.probe as probe_mod
    from hpcgpu.doctor.result import Skip

    def missing():
        raise Skip("pynvml not importable (No module named 'pynvml'): pip install nvidia-ml-py")

    monkeypatch.setattr(probe_mod, "load_nvml", missing)
    r = check_gpus(Probe(env={}, root=tmp_path, nvml=None))
    assert r.status == "skip" and "nvidia-ml-py" in r.detail


def test_mixed_models_warn(tmp_path):
    r = check_gpu_models(probe(tmp_path, h100s(2) + [pcie_gpu()]))
    assert r.status == "warn"
    assert r.detail == "mixed GPU models on one node: 2 x NVIDIA H100 80GB HBM3, 1 x NVIDIA L40S"
    assert check_gpu_models(probe(tmp_path, h100s(4))).status == "ok"


def test_busy_gpu_warns(tmp_path):
    gpus = h100s(2)
    gpus[1].util, gpus[1].memory_used = 97, 40 * GiB
    r = check_gpu_load(probe(tmp_path, gpus))
    assert r.status == "warn" and r.detail == "GPU1 97% busy, 40 GiB used"
    assert check_gpu_load(probe(tmp_path, h100s(2))).status == "ok"


def test_utilisation_not_supported_is_not_an_error(tmp_path):
    r = check_gpu_load(probe(tmp_path, h100s(2, util=None)))
    assert r.status == "ok"
    assert r.detail == "2 GPU(s) idle; utilisation not reported by 2 GPU(s) (memory checked only)"


def test_ecc_errors_fail(tmp_path):
    gpus = h100s(2)
    gpus[1].ecc_uncorrected = 3
    r = check_gpu_ecc(probe(tmp_path, gpus))
    assert r.status == "fail" and r.detail == "uncorrected ECC errors since boot: GPU1: 3"
    assert r.data["uncorrected"] == {0: 0, 1: 3}


def test_ecc_ok_and_unsupported(tmp_path):
    assert check_gpu_ecc(probe(tmp_path, h100s(2))).status == "ok"
    assert check_gpu_ecc(probe(tmp_path, h100s(2, ecc_uncorrected=None))).status == "skip"


def test_compute_mode_prohibited_fails(tmp_path):
    gpus = h100s(2)
    gpus[0].compute_mode = FakeNvml.NVML_COMPUTEMODE_PROHIBITED
    r = check_gpu_modes(probe(tmp_path, gpus))
    assert r.status == "fail" and "GPU0" in r.detail


def test_persistence_off_warns_and_exclusive_process_is_fine(tmp_path):
    r = check_gpu_modes(probe(tmp_path, h100s(2, persistence=0)))
    assert r.status == "warn" and "nvidia-smi -pm 1" in r.hint
    exclusive = h100s(2, compute_mode=FakeNvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)
    assert check_gpu_modes(probe(tmp_path, exclusive)).status == "ok"


def test_topology_all_nvlink(tmp_path):
    r = check_gpu_topology(probe(tmp_path, h100s(4)))
    assert r.status == "ok" and r.detail == "NVLink on every GPU (18-18 active links each)"
    assert r.data["nvlinks"] == [18, 18, 18, 18]


def test_topology_pcie_across_sockets_warns(tmp_path):
    gpus = [pcie_gpu(index=0), pcie_gpu(index=1)]
    r = check_gpu_topology(probe(tmp_path, gpus, topology={(0, 1): 50}))
    assert r.status == "warn"
    assert r.detail == "PCIe only; worst pair GPU0-GPU1: SYS (crosses CPU sockets)"


def test_topology_pcie_under_one_switch_is_ok(tmp_path):
    gpus = [pcie_gpu(index=0), pcie_gpu(index=1)]
    r = check_gpu_topology(probe(tmp_path, gpus, topology={(0, 1): 10}))
    assert r.status == "ok" and "PIX" in r.detail


def test_topology_partly_nvlinked_warns(tmp_path):
    gpus = h100s(2) + [pcie_gpu(index=2)]
    r = check_gpu_topology(probe(tmp_path, gpus, topology={(0, 2): 40, (1, 2): 40}))
    assert r.status == "warn" and r.detail.startswith("no NVLink on GPU2")


def test_topology_counts_only_active_links(tmp_path):
    gpus = h100s(2, nvlinks_active=12)
    assert check_gpu_topology(probe(tmp_path, gpus)).data["nvlinks"] == [12, 12]


def test_topology_single_gpu_skips(tmp_path):
    assert check_gpu_topology(probe(tmp_path, [FakeGpu()])).status == "skip"


def test_driver_library_mismatch_fails(tmp_path):
    p = fake_probe(tmp_path, nvml=FakeNvml(gpus=h100s(2), init_error="Driver/library version mismatch"))
    r = check_gpus(p)
    assert r.status == "fail" and "version mismatch" in r.detail and "reboot" in r.hint


class LostGpuNvml(FakeNvml):
    def nvmlDeviceGetHandleByIndex(self, i):
        if i == 1:
            raise FakeNVMLError("GPU is lost")
        return i


def test_a_lost_gpu_fails_every_gpu_check_and_nvml_is_still_closed(tmp_path):
    nvml = LostGpuNvml(gpus=h100s(2))
    p = fake_probe(tmp_path, nvml=nvml)
    for fn in GPU_CHECKS:
        r = fn(p)
        assert (r.status, r.detail) == ("fail", "NVML cannot open GPU 1: GPU is lost"), fn.check_name
    p.close()
    assert nvml.calls == ["init", "shutdown"]


def partial_node(held=(6, 7), total=8):
    """A Slurm job holding some of the node's GPUs: the cgroup denies the others to NVML."""
    gpus = h100s(total)
    for i, g in enumerate(gpus):
        g.accessible = i in held
    return gpus


def test_gpus_of_other_jobs_are_skipped_as_nvidia_smi_does(tmp_path):
    p = probe(tmp_path, partial_node())
    r = check_gpus(p)
    assert r.status == "ok"
    assert r.detail == ("2 of 8 GPUs accessible (the others belong to other jobs or are hidden by "
                        "the cgroup); 2 x NVIDIA H100 80GB HBM3 (80 GiB); driver 550.54.15")
    assert r.data["hidden_nvml_indices"] == [0, 1, 2, 3, 4, 5]
    # the held GPUs are numbered as CUDA numbers them inside the cgroup: 0 and 1
    assert [g["uuid"][-1] for g in r.data["gpus"]] == ["6", "7"]
    for fn in GPU_CHECKS:
        assert fn(p).status in ("ok", "warn", "skip"), (fn.check_name, fn(p))
    assert check_gpu_topology(p).data["nvlinks"] == [18, 18]
    assert p.gpu_count() == 2


class DeniedHandleNvml(FakeNvml):
    """Drivers that deny already at nvmlDeviceGetHandleByIndex."""

    def nvmlDeviceGetHandleByIndex(self, i):
        if not self.gpus[i].accessible:
            raise no_permission()
        return i


def test_a_denied_handle_is_skipped_too(tmp_path):
    p = fake_probe(tmp_path, nvml=DeniedHandleNvml(gpus=partial_node(held=(0,), total=4)))
    assert check_gpus(p).detail.startswith("1 of 4 GPUs accessible")


def test_a_job_holding_no_gpu_skips_the_gpu_checks(tmp_path):
    p = probe(tmp_path, partial_node(held=()))
    for fn in GPU_CHECKS:
        r = fn(p)
        assert r.status == "skip", (fn.check_name, r)
        assert r.detail == ("none of the 8 GPUs on this node is accessible (they belong to other "
                            "jobs or are hidden by the cgroup)")


class LostOnQueryNvml(FakeNvml):
    """A GPU whose handle opens but whose queries answer GPU_IS_LOST: a real error, not a cgroup."""

    def nvmlDeviceGetUUID(self, h):
        if h == 1:
            raise FakeNVMLError("GPU is lost", FakeNvml.NVML_ERROR_GPU_IS_LOST)
        return super().nvmlDeviceGetUUID(h)


def test_a_gpu_lost_on_query_still_fails(tmp_path):
    p = fake_probe(tmp_path, nvml=LostOnQueryNvml(gpus=partial_node(held=(0, 1, 2), total=4)))
    r = check_gpus(p)
    assert (r.status, r.detail) == ("fail", "NVML cannot open GPU 1: GPU is lost")
    assert "drain the node" in r.hint


def test_mig_says_once_that_utilisation_is_unavailable(tmp_path):
    r = check_gpu_load(probe(tmp_path, h100s(4, mig=True)))
    assert r.status == "ok"
    assert r.detail == ("4 GPU(s) idle; GPU utilisation is not available on MIG instances "
                        "(memory checked only)")
    assert [g["util_pct"] for g in r.data["gpus"]] == [None] * 4


def test_mig_note_also_under_a_busy_warning(tmp_path):
    gpus = h100s(2, mig=True)
    gpus[0].memory_used = 40 * GiB
    r = check_gpu_load(probe(tmp_path, gpus))
    assert r.status == "warn"
    assert r.detail == ("GPU0 ?% busy, 40 GiB used; GPU utilisation is not available on MIG "
                        "instances (memory checked only)")


def test_the_fake_matches_pynvml():
    """The fake must keep pynvml's names, arities and constant values, or the tests prove nothing."""
    pynvml = pytest.importorskip("pynvml")
    for name in dir(FakeNvml):
        if name.startswith("nvml"):
            real = inspect.signature(getattr(pynvml, name)).parameters.values()
            required = [p for p in real if p.default is inspect.Parameter.empty]
            fake = list(inspect.signature(getattr(FakeNvml, name)).parameters)[1:]
            assert len(fake) == len(required), name
        elif name.startswith("NVML_"):
            assert getattr(FakeNvml, name) == getattr(pynvml, name), name
