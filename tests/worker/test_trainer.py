"""The built-in Trainer on 2 real CPU ranks (gloo): the demo, FSDP with accumulation; clear errors (on one)."""

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


def fsdp_spec(async_save: bool) -> dict:
    return demo_spec(train={"strategy": "fsdp", "grad_accum": 2, "epochs": 1, "max_steps": 14},
                     checkpoint={"every_steps": 5, "async_save": async_save})


def resume_from(step_dir: Path, base: Path, spec: dict):
    """A run in base from a copy of one checkpoint."""
    (base / "checkpoints").mkdir(parents=True)
    shutil.copytree(step_dir, base / "checkpoints" / step_dir.name)
    result = run(base, spec)
    assert result.rc == 0, result.explain()
    return result


def assert_saves_verify(base: Path, saved: list, log: str) -> None:
    """Every save committed, in step order (async: each waits for the one before), and verifiable."""
    assert re.findall(r"^hpcgpu: checkpoint step (\d+) -> ", log, re.MULTILINE) == saved, log
    manifest = json.loads((base / "checkpoints" / "step_00000010" / ckpt.MANIFEST).read_text())
    assert manifest["kind"] == "fsdp"
    assert {"shards/__0_0.distcp", "shards/__1_0.distcp", "shards/.metadata", ckpt.STATE} <= set(manifest["files"])
    assert ckpt.latest_valid(base / "checkpoints", report=lambda _: None).name == "step_00000014"


def test_fsdp_with_grad_accum_resumes_exactly_from_async_and_sync_saves(tmp_path):
    # One chain of three launches instead of a run and a resume per save mode: an async run from
    # scratch, a sync run resumed from its (async) step 5, an async run resumed from that one's
    # (sync) step 10. Each save mode writes step 10 once and is resumed from once.
    first = run(tmp_path / "a", fsdp_spec(async_save=True))
    assert first.rc == 0, first.explain()
    assert "fsdp on 2 rank(s) x cpu, fp32; effective batch 16 x 2 rank(s) x 2 accum = 64 samples/step" in first.log()
    assert_saves_verify(tmp_path / "a", ["5", "10", "14"], first.log())

    sync = resume_from(tmp_path / "a" / "checkpoints" / "step_00000005", tmp_path / "b", fsdp_spec(async_save=False))
    assert "step_00000005: step 5, epoch 0, batch 10 of 32" in sync.log()
    assert_saves_verify(tmp_path / "b", ["10", "14"], sync.log())
    assert sync.final_loss == first.final_loss

    again = resume_from(tmp_path / "b" / "checkpoints" / "step_00000010", tmp_path / "c", fsdp_spec(async_save=True))
    assert "step_00000010: step 10, epoch 0, batch 20 of 32" in again.log()
    assert again.final_loss == first.final_loss


def test_fp16_on_cpu_fails_naming_the_key(tmp_path):
    # `hpcgpu run local` refuses this before starting anything; the worker checks again for torchrun.
    # Each rank checks its own setup: one rank shows it (and pays one torch start-up, not two).
    result = run(tmp_path, demo_spec(train={"precision": "fp16"}), nproc=1, launcher="torchrun")
    assert result.rc == 1
    assert "train.precision fp16 needs CUDA GPUs" in result.log(0)
    assert result.exit_record(0)["status"] == "failed"
