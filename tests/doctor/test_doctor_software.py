"""Python, torch, CUDA/driver agreement, cuDNN and NCCL checks, driven by fake torch info and NVML."""

import pytest

from hpcgpu.doctor.checks_software import (check_cuda, check_cudnn, check_nccl, check_python,
                                           check_torch, cuda_version, cudnn_version)
from tests.helpers.doctor_fakes import CPU_TORCH, CUDA_TORCH, FakeNvml, fake_probe, h100s


def probe(tmp_path, torch=None, gpus=0, cuda_driver=12080, **kw):
    nvml = FakeNvml(gpus=h100s(gpus), cuda_driver=cuda_driver) if gpus else None
    extra = {"nvml": nvml} if nvml else {}
    info = dict(torch or CPU_TORCH)
    return fake_probe(tmp_path, torch_loader=lambda: info, **extra, **kw)


def test_python_ok_and_too_old(tmp_path):
    assert check_python(probe(tmp_path)).status == "ok"
    r = check_python(probe(tmp_path, python=("3.9.18", "/usr/bin/python3.9")))
    assert r.status == "fail" and "3.10" in r.hint


def test_torch_cpu_build(tmp_path):
    r = check_torch(probe(tmp_path))
    assert (r.status, r.detail) == ("ok", "2.13.0+cpu (CPU build)")


def test_torch_not_importable_is_a_failure_not_a_crash(tmp_path):
    r = check_torch(probe(tmp_path, torch={"error": "ImportError: libcudart.so.12"}))
    assert r.status == "fail" and "libcudart" in r.detail


def test_torch_without_distributed(tmp_path):
    assert check_torch(probe(tmp_path, torch={**CPU_TORCH, "distributed": False})).status == "fail"


def test_cpu_torch_on_a_gpu_machine_fails(tmp_path):
    r = check_cuda(probe(tmp_path, gpus=2))
    assert r.status == "fail" and "CPU build but 2 GPU(s)" in r.detail and "whl/cu" in r.hint


def test_cpu_torch_without_gpu_skips(tmp_path):
    assert check_cuda(probe(tmp_path)).status == "skip"


@pytest.mark.parametrize("driver, torch_cuda, status", [
    (12080, "12.8", "ok"),
    (12090, "12.8", "ok"),       # newer driver than needed
    (12040, "12.8", "warn"),     # minor-version compatibility only
    (11080, "12.8", "fail"),     # driver too old for CUDA 12
])
def test_torch_cuda_against_the_driver(tmp_path, driver, torch_cuda, status):
    r = check_cuda(probe(tmp_path, torch={**CUDA_TORCH, "cuda": torch_cuda}, gpus=2,
                         cuda_driver=driver))
    assert r.status == status, r.detail
    assert r.data["driver_cuda"] == cuda_version(driver)


def test_cuda_unavailable_in_torch_fails(tmp_path):
    r = check_cuda(probe(tmp_path, torch={**CUDA_TORCH, "cuda_available": False}, gpus=2))
    assert r.status == "fail" and "is_available() is False" in r.detail


def test_cuda_build_without_driver_skips(tmp_path):
    r = check_cuda(probe(tmp_path, torch=CUDA_TORCH))
    assert r.status == "skip" and "CUDA 12.8" in r.detail


@pytest.mark.parametrize("v, text", [(91002, "9.10.2"), (90100, "9.1.0"), (8902, "8.9.2")])
def test_cudnn_version(v, text):
    assert cudnn_version(v) == text


def test_cudnn(tmp_path):
    assert check_cudnn(probe(tmp_path, torch=CUDA_TORCH)).detail == "cuDNN 9.10.2"
    assert check_cudnn(probe(tmp_path)).status == "skip"
    assert check_cudnn(probe(tmp_path, torch={**CUDA_TORCH, "cudnn": None})).status == "warn"


def test_nccl(tmp_path):
    assert check_nccl(probe(tmp_path, torch=CUDA_TORCH, gpus=2)).detail == "NCCL 2.27.3"
    assert check_nccl(probe(tmp_path)).status == "skip"
    no_nccl = {**CUDA_TORCH, "nccl_backend": False, "nccl": None}
    assert check_nccl(probe(tmp_path, torch=no_nccl, gpus=2)).status == "fail"


def test_torch_is_loaded_once(tmp_path):
    calls = []
    p = fake_probe(tmp_path, torch_loader=lambda: calls.append(1) or dict(CPU_TORCH))
    for fn in (check_torch, check_cuda, check_cudnn, check_nccl):
        fn(p)
    assert calls == [1]
