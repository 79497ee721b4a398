"""Interrupted runs resume to exactly the same result as an uninterrupted one (real ranks, gloo, CPU)."""

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.launch import demo_spec, logged_step, rank_pid, run, start, wait_until  # noqa: E402

from hpcgpu.contract import exitcodes  # noqa: E402
from hpcgpu.worker import checkpoint as ckpt  # noqa: E402

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 32  # 1024 samples / 2 ranks / batch 16; 2 epochs = 64 steps
SLOW_TASK = {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 1024, "delay_s": 0.03}}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted run every other run must match bit for bit."""
    result = run(tmp_path_factory.mktemp("baseline"), demo_spec())
    assert result.rc == 0, result.explain()
    return result


def final_state(base: Path) -> dict:
    newest = ckpt.list_checkpoints(base / "checkpoints")[0][1]
    assert newest.name == "step_00000064"
    return ckpt.load_state(newest)


def assert_same_bits(a: dict, b: dict) -> None:
    """Model and optimizer state equal in every bit."""
    for part in ("model", "optimizer"):
        flat_a, flat_b = _leaves(a[part]), _leaves(b[part])
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            x, y = flat_a[key], flat_b[key]
            same = torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
            assert same, f"{part}.{key} differs"


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _leaves(sub, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): tree}


def test_sigterm_mid_epoch_with_loader_workers_resumes_bit_for_bit(baseline, tmp_path):
    spec = demo_spec(entry=SLOW_TASK, train={"num_workers": 2})
    launch = start(tmp_path, spec)
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= 8, 90, "step 8")
    os.kill(rank_pid(run_dir, 1), signal.SIGTERM)  # one rank only, as a preemption notice might
    stopped = launch.wait()

    assert stopped.rc == exitcodes.STOPPED_RESUMABLE, stopped.explain()
    e0, e1 = stopped.exit_record(0), stopped.exit_record(1)
    assert e0["status"] == e1["status"] == "stopped" and e0["step"] == e1["step"]  # agreed on one step
    assert (e1["reason"], e0["reason"]) == ("SIGTERM", "another rank")
    step = e0["step"]
    assert 8 <= step < STEPS_PER_EPOCH, "the stop should land in the middle of the first epoch"
    assert e0["checkpoint"].endswith(ckpt.step_dir_name(step))

    resumed = run(tmp_path, spec)
    assert resumed.rc == 0, resumed.explain()
    assert f"resuming from {tmp_path / 'checkpoints' / ckpt.step_dir_name(step)}: step {step}, epoch 0" in resumed.log()
    assert resumed.final_loss == baseline.final_loss
    assert_same_bits(final_state(baseline.base), final_state(tmp_path))


def test_sighup_to_the_launcher_checkpoints_and_stops_like_sigterm(baseline, tmp_path):
    # an SSH session that drops sends SIGHUP to the launcher; the ranks must checkpoint, not die
    spec = demo_spec(entry=SLOW_TASK)
    launch = start(tmp_path, spec)
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= 8, 90, "step 8")
    os.kill(launch.proc.pid, signal.SIGHUP)
    stopped = launch.wait()

    assert stopped.rc == exitcodes.STOPPED_RESUMABLE, stopped.explain()
    e0, e1 = stopped.exit_record(0), stopped.exit_record(1)
    assert e0["status"] == e1["status"] == "stopped" and e0["step"] == e1["step"]
    assert "SIGHUP" in (e0["reason"], e1["reason"]), (e0, e1)
    resumed = run(tmp_path, spec)
    assert resumed.rc == 0, resumed.explain()
    assert resumed.final_loss == baseline.final_loss


def test_truncated_newest_checkpoint_is_reported_and_resume_falls_back(baseline, tmp_path):
    shutil.copytree(baseline.base / "checkpoints", tmp_path / "checkpoints")
    newest = tmp_path / "checkpoints" / "step_00000064"
    data = (newest / ckpt.STATE).read_bytes()
    (newest / ckpt.STATE).write_bytes(data[: len(data) // 3])

    resumed = run(tmp_path, demo_spec())
    assert resumed.rc == 0, resumed.explain()
    log = resumed.log()
    assert "skipping checkpoint" in log and "step_00000064" in log and "truncated" in log
    assert "resuming from" in log and "step_00000060: step 60" in log
    assert (tmp_path / "checkpoints" / "step_00000064.corrupt").is_dir()  # kept aside for a look
    assert resumed.final_loss == baseline.final_loss
    assert_same_bits(final_state(baseline.base), final_state(tmp_path))


def test_every_checkpoint_truncated_restarts_from_step_0_with_a_loud_warning(baseline, tmp_path):
    shutil.copytree(baseline.base / "checkpoints", tmp_path / "checkpoints")
    found = ckpt.list_checkpoints(tmp_path / "checkpoints")
    for _, path in found:
        data = (path / ckpt.STATE).read_bytes()
        (path / ckpt.STATE).write_bytes(data[: len(data) // 3])

    resumed = run(tmp_path, demo_spec())
    assert resumed.rc == 0, resumed.explain()
    log = resumed.log()
    assert f"{len(found)} checkpoints found in" in log and "none could be used" in log
    assert "starting from step 0: all progress of this run is lost" in log
    assert "no checkpoint to resume from" not in log and "resuming from" not in log
    assert all(path.with_name(path.name + ".corrupt").is_dir() for _, path in found)
    assert resumed.final_loss == baseline.final_loss  # trained again from the start, exactly


def test_sigkill_of_a_rank_then_resume_from_the_last_valid_checkpoint(baseline, tmp_path):
    spec = demo_spec(entry=SLOW_TASK, checkpoint={"every_steps": 3})  # saves often: a kill may hit one
    launch = start(tmp_path, spec)
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= 12, 90, "step 12")
    os.kill(rank_pid(run_dir, 0), signal.SIGKILL)  # rank 0 is the one writing checkpoints
    crashed = launch.wait()
    assert crashed.rc not in (0, exitcodes.STOPPED_RESUMABLE)

    resumed = run(tmp_path, spec)
    assert resumed.rc == 0, resumed.explain()
    assert "resuming from" in resumed.log()
    assert resumed.final_loss == baseline.final_loss
    assert_same_bits(final_state(baseline.base), final_state(tmp_path))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR2])
def test_stop_signal_to_the_launcher_with_loader_workers_checkpoints(baseline, tmp_path, stop_signal):
    # `hpcgpu cancel`, `kill -TERM <launcher>`, `docker stop`: torch elastic signals each rank's
    # whole process group, loader workers included; they must not die before their rank checkpoints
    spec = demo_spec(entry=SLOW_TASK, train={"num_workers": 2})
    launch = start(tmp_path, spec)
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= 8, 90, "step 8")
    os.kill(launch.proc.pid, stop_signal)
    stopped = launch.wait()

    assert stopped.rc == exitcodes.STOPPED_RESUMABLE, stopped.explain()
    assert "is killed by signal" not in stopped.log()
    e0, e1 = stopped.exit_record(0), stopped.exit_record(1)
    assert e0["status"] == e1["status"] == "stopped" and e0["step"] == e1["step"]
    assert e0["checkpoint"].endswith(ckpt.step_dir_name(e0["step"]))
    resumed = run(tmp_path, spec)
    assert resumed.rc == 0, resumed.explain()
    assert resumed.final_loss == baseline.final_loss
