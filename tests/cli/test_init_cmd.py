"""`hpcgpu init`: the precision it proposes, and the spec it writes loads."""

import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hpcgpu.cli.init_cmd import init, proposed_precision  # noqa: E402


def test_bf16_on_gpus_fp32_on_cpus_fp16_for_dp():
    assert proposed_precision(4, "ddp") == "bf16"
    assert proposed_precision(4, "fsdp") == "bf16"
    assert proposed_precision(0, "ddp") == "fp32"
    assert proposed_precision(2, "dp") == "fp16"  # dp + bf16 is refused (replica threads run fp16)


def test_init_with_gpus_writes_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 2)
    out = tmp_path / "hpcgpu.yaml"
    result = CliRunner().invoke(init, ["-y", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "precision: bf16" in out.read_text() and "gpus_per_node: 2" in out.read_text()


def test_choosing_dp_on_gpus_proposes_a_precision_that_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 2)
    out = tmp_path / "hpcgpu.yaml"
    # name, GPUs, strategy dp, then the proposed precision and task taken as they are
    result = CliRunner().invoke(init, ["-o", str(out)], input="job\n2\ndp\n\n\n")
    assert result.exit_code == 0, result.output
    assert "precision: fp16" in out.read_text()
