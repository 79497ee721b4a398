"""MFU against datasheet peaks (dense, not sparsity) and the TF32 switch, without a GPU."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpcgpu.worker.perf import gpu_model, mfu, peak_flops, throughput_scalars, use_tf32  # noqa: E402
from hpcgpu.worker.report import print_summary  # noqa: E402


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe"),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA GH200 480GB", None),  # whole tokens: not an H200
    ("NVIDIA A10G", None),
    ("NVIDIA H20", None),
    ("Tesla V100-SXM2-32GB", None),
])
def test_device_names_map_to_the_table(name, model):
    assert gpu_model(name) == model


def test_peaks_are_dense_and_follow_the_precision():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16", tf32=True) == pytest.approx(989.5e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp16", tf32=False) == pytest.approx(989.5e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32", tf32=True) == pytest.approx(494.5e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16", tf32=True) == pytest.approx(312e12)
    assert peak_flops("NVIDIA L40S", "fp32", tf32=True) == pytest.approx(183e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32", tf32=False) is None  # CUDA-core fp32: not kept
    assert peak_flops("Some Future GPU", "bf16", tf32=True) is None


def test_mfu_over_all_devices():
    # 8 GPUs at 400 TFLOP/s each of a 1000 TFLOP/s peak: 40 %
    assert mfu(8 * 400e12, 1000e12, 8) == pytest.approx(0.4)


def test_tensorboard_scalars():
    assert throughput_scalars(1000.0, 1e9, 100e12, 2) == {"train/tflops": pytest.approx(1.0),
                                                          "train/mfu": pytest.approx(0.005)}
    assert throughput_scalars(1000.0, 1e9, None, 2) == {"train/tflops": pytest.approx(1.0)}  # unknown GPU
    assert throughput_scalars(1000.0, None, 100e12, 2) == {}  # the task gives no FLOPs


def test_summary_prints_mfu_when_the_peak_is_known(capsys, tmp_path):
    stats = {"status": "done", "steps": 10, "epochs": 1.0, "final_loss": 0.5, "train_s": 1.0, "wall_s": 2.0,
             "samples": 1000, "checkpoint": None}
    print_summary(stats, tmp_path, 1e9, peak_flops=10e12)
    assert "1,000 samples/s, 1.00 TFLOP/s (MFU 10.0%)" in capsys.readouterr().out
    print_summary(stats, tmp_path, 1e9)
    assert "TFLOP/s, wall" in capsys.readouterr().out


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(before[0])
    torch.backends.cudnn.allow_tf32 = before[1]


def test_tf32_on_cuda_and_off_by_the_spec_key(restore_matmul_precision):
    # only flags are set: a torch without CUDA takes them too
    torch.set_float32_matmul_precision("highest")
    use_tf32(True, torch.device("cuda", 0))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    use_tf32(False, torch.device("cuda", 0))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_cpu_runs_keep_full_fp32(restore_matmul_precision):
    torch.set_float32_matmul_precision("highest")
    use_tf32(True, torch.device("cpu"))
    assert torch.get_float32_matmul_precision() == "highest"
