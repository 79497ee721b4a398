"""The built-in Trainer on 2 real CPU ranks (gloo): the demo, FSDP with accumulation, clear errors."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.launch import demo_spec, run  # noqa: E402

from hpcgpu.worker import checkpoint as ckpt  # noqa: E402

pytestmark = pytest.mark.slow


def logged_losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r" loss (\d+\.\d+)", log)]


def test_bundled_demo_under_plain_torchrun(tmp_path):
    """The default spec (no file at all) trains to a falling loss; bar, TensorBoard, summaries."""
    result = run(tmp_path, {"name": "demo", "logging": {"tensorboard": True}}, launcher="torchrun",
                 env={"HPCGPU_CONSOLE_TTY": "1"})
    assert result.rc == 0, result.explain()
    log = result.log(0)
    assert "ddp on 2 rank(s) x cpu, fp32; effective batch 32 x 2 rank(s) x 1 accum = 64 samples/step" in log
    assert "lr 0.001 -> 0.002 (linear scaling)" in log
    assert b"\r[" in (tmp_path / "logs" / "rank0.log").read_bytes()  # a live bar on a terminal
    losses = logged_losses(log)
    assert losses[-1] < 0.6 * losses[0], losses
    summary = result.summary()
    assert summary["status"] == "done" and summary["steps"] == 128 and summary["samples_per_s"] > 0
    assert repr(summary["final_loss"]) == result.final_loss
    assert result.exit_record(1)["status"] == "done"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [128, 100]
    assert "Traceback" not in log + result.log(1)


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_fsdp_with_grad_accum_resumes_exactly(tmp_path, async_save):
    spec = demo_spec(train={"strategy": "fsdp", "grad_accum": 2, "epochs": 1, "max_steps": 14},
                     checkpoint={"every_steps": 5, "async_save": async_save})
    first = run(tmp_path / "a", spec)
    assert first.rc == 0, first.explain()
    assert "fsdp on 2 rank(s) x cpu, fp32; effective batch 16 x 2 rank(s) x 2 accum = 64 samples/step" in first.log()
    # every save committed, in step order (async: each waits for the one before), and verifiable
    saved = re.findall(r"^hpcgpu: checkpoint step (\d+) -> ", first.log(), re.MULTILINE)
    assert saved == ["5", "10", "14"], first.log()
    step10 = tmp_path / "a" / "checkpoints" / "step_00000010"
    manifest = json.loads((step10 / ckpt.MANIFEST).read_text())
    assert manifest["kind"] == "fsdp"
    assert {"shards/__0_0.distcp", "shards/__1_0.distcp", "shards/.metadata", ckpt.STATE} <= set(manifest["files"])
    assert ckpt.latest_valid(tmp_path / "a" / "checkpoints", report=lambda _: None).name == "step_00000014"

    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(step10, tmp_path / "b" / "checkpoints" / step10.name)
    second = run(tmp_path / "b", spec)
    assert second.rc == 0, second.explain()
    assert "step_00000010: step 10, epoch 0, batch 20 of 32" in second.log()
    assert second.final_loss == first.final_loss


def test_fp16_on_cpu_fails_naming_the_key(tmp_path):
    # `hpcgpu run local` refuses this before starting anything; the worker checks again for torchrun.
    result = run(tmp_path, demo_spec(train={"precision": "fp16"}), launcher="torchrun")
    assert result.rc == 1
    assert "train.precision fp16 needs CUDA GPUs" in result.log(0)
    assert result.exit_record(0)["status"] == "failed"
