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


def test_an_invalid_name_is_refused_at_its_prompt_and_asked_again(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 0)
    out = tmp_path / "hpcgpu.yaml"
    result = CliRunner().invoke(init, ["-o", str(out)], input="bad name!\ngood-name\n\n\n\n\n")
    assert result.exit_code == 0, result.output
    # the error comes right after the bad answer, before the next question
    assert result.output.index("letters, digits") < result.output.index("GPUs per node")
    assert "name: good-name" in out.read_text()


def test_yes_with_an_output_in_new_folders_creates_them(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 0)
    out = tmp_path / "sub" / "dir" / "x.yaml"
    result = CliRunner().invoke(init, ["-y", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"-f {out}" in result.output


def test_without_gpus_fp16_is_not_offered(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 0)
    out = tmp_path / "hpcgpu.yaml"
    # name, 0 GPUs, ddp, then fp16 (refused: CPU ranks run fp32 or bf16), then the default
    result = CliRunner().invoke(init, ["-o", str(out)], input="job\n0\nddp\nfp16\n\n\n")
    assert result.exit_code == 0, result.output
    assert "'fp16' is not one of 'fp32', 'bf16'" in result.output and "precision: fp32" in out.read_text()


def test_asking_for_more_gpus_than_this_machine_has_says_where_the_spec_runs(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 0)
    out = tmp_path / "hpcgpu.yaml"
    result = CliRunner().invoke(init, ["-o", str(out)], input="job\n8\nddp\n\n\n")
    assert result.exit_code == 0, result.output
    assert "this machine has 0 GPU(s)" in result.output and "precision: bf16" in out.read_text()


def test_an_invalid_task_is_refused_at_its_prompt(tmp_path, monkeypatch):
    monkeypatch.setattr("hpcgpu.host.gpus.count_visible_gpus", lambda env: 0)
    out = tmp_path / "hpcgpu.yaml"
    result = CliRunner().invoke(init, ["-o", str(out)], input="job\n0\nddp\n\nno colon here\nmy.mod:make\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Task (module:function)") == 2 and "task: my.mod:make" in out.read_text()
