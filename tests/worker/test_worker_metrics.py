"""GPU metrics from NVML (a fake at the pynvml boundary): MIG instances, and saying once what is missing."""

import torch

from hpcgpu.worker.metrics import MIG_NO_UTIL, GpuMonitor, gpu_readings, handle_by_cuda_uuid
from tests.helpers.doctor_fakes import GiB, FakeGpu, FakeNvml

MIG_UUID = "0e2f1a3b-4c5d-6e7f-8091-a2b3c4d5e6f7"  # as torch's device properties print it


def mig_instance():
    return FakeGpu(name="NVIDIA H100 80GB HBM3 MIG 1g.10gb", uuid=f"MIG-{MIG_UUID}",
                   memory_total=10 * GiB, memory_used=2 * GiB, mig=True)


def monitor(nvml, handle):
    said = []
    m = GpuMonitor(torch.device("cpu"), say=said.append)  # CPU: opens nothing; NVML injected below
    m.nvml, m.handle = nvml, handle
    return m, said


def test_a_whole_gpu_reports_both_readings():
    nvml = FakeNvml(gpus=[FakeGpu(util=42, memory_used=3 * GiB)])
    assert gpu_readings(nvml, 0) == ({"gpu/util_pct": 42.0, "gpu/mem_used_gb": 3.0}, "")


def test_mig_keeps_memory_and_says_why_utilisation_is_missing():
    values, missing = gpu_readings(FakeNvml(gpus=[mig_instance()]), 0)
    assert values == {"gpu/mem_used_gb": 2.0}
    assert missing == MIG_NO_UTIL == "GPU utilisation is not available on MIG instances"


def test_a_gpu_in_mig_mode_is_recognised_too():
    nvml = FakeNvml(gpus=[FakeGpu(mig=True)])  # the parent GPU's handle, MIG mode on
    assert gpu_readings(nvml, 0)[1] == MIG_NO_UTIL


def test_other_missing_utilisation_is_named_with_nvml_s_reason():
    assert gpu_readings(FakeNvml(gpus=[FakeGpu(util=None)]), 0)[1] == \
        "GPU utilisation is not available (Not Supported)"


def test_the_monitor_says_it_once_not_every_step():
    m, said = monitor(FakeNvml(gpus=[mig_instance()]), 0)
    assert [m.read() for _ in range(3)] == [{"gpu/mem_used_gb": 2.0}] * 3
    assert said == [f"hpcgpu: {MIG_NO_UTIL}: TensorBoard gets no gpu/util_pct"]


def test_the_monitor_is_quiet_when_all_is_read():
    m, said = monitor(FakeNvml(gpus=[FakeGpu()]), 0)
    assert set(m.read()) == {"gpu/util_pct", "gpu/mem_used_gb"} and said == []


def test_cuda_uuid_finds_a_whole_gpu_or_a_mig_instance():
    nvml = FakeNvml(gpus=[FakeGpu(uuid="GPU-1111"), mig_instance()])
    assert handle_by_cuda_uuid(nvml, "1111") == 0
    assert handle_by_cuda_uuid(nvml, MIG_UUID) == 1
