"""Interrupted runs resume to exactly the same result as an uninterrupted one (real ranks, gloo, CPU).

Every launch costs two ranks' worth of torch start-up, so the stop signals share one chain of runs
in one directory: each launch resumes from the checkpoint the one before it left and is itself
stopped by the next signal (a rank's SIGTERM, the launcher's SIGHUP, SIGTERM and SIGUSR2, then a
SIGKILL of rank 0), and the last one runs to the end, after the newest checkpoint the kill left was
truncated. A checkpoint that lost or changed a single bit anywhere along the chain would make that
end differ from the uninterrupted run, so each signal's test asserts its own stop, that the next
launch resumed from exactly its checkpoint, and that the chain ends bit for bit where the
uninterrupted run (tests/helpers/demo_baseline.py) ends.
"""

import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.demo_baseline import demo_baseline  # noqa: E402
from tests.helpers.launch import Result, demo_spec, logged_step, rank_pid, run, start, wait_until  # noqa: E402

from hpcgpu.contract import exitcodes  # noqa: E402
from hpcgpu.worker import checkpoint as ckpt  # noqa: E402

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 32  # 1024 samples / 2 ranks / batch 16; 2 epochs = 64 steps
SLOW_TASK = {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 1024, "delay_s": 0.1}}
# Ranks agree on a stop every stop_check_every steps, so a stop lands on the next multiple of it:
# 4 (not the default 10), slow steps and a progress line every 2 steps (signals go out sooner) leave
# room for five stops in 64 steps however late a signal lands. None changes a number the training computes.
SLOW = {"entry": SLOW_TASK, "distributed": {"stop_check_every": 4}}
WORKERS = demo_spec(**SLOW, train={"num_workers": 2, "log_every": 2})
PLAIN = demo_spec(**SLOW, train={"log_every": 2})
OFTEN = demo_spec(**SLOW, train={"log_every": 2}, checkpoint={"every_steps": 3})  # saves often: a kill may hit one


def to_rank(rank: int, sig: int):
    return lambda launch, run_dir: os.kill(rank_pid(run_dir, rank), sig)


def to_launcher(sig: int):
    return lambda launch, run_dir: os.kill(launch.proc.pid, sig)


# (name, spec, steps past the point it resumed from before the signal, how the signal is sent)
LEGS = [
    ("SIGTERM to rank 1", WORKERS, 8, to_rank(1, signal.SIGTERM)),  # one rank only, as a preemption notice might
    # an SSH session that drops sends SIGHUP to the launcher; the ranks must checkpoint, not die
    ("SIGHUP to the launcher", PLAIN, 1, to_launcher(signal.SIGHUP)),
    # `hpcgpu cancel`, `kill -TERM <launcher>`, `docker stop`: torch elastic signals each rank's
    # whole process group, loader workers included; they must not die before their rank checkpoints
    ("SIGTERM to the launcher", WORKERS, 1, to_launcher(signal.SIGTERM)),
    ("SIGUSR2 to the launcher", WORKERS, 1, to_launcher(signal.SIGUSR2)),
    # rank 0 is the one writing checkpoints; it has written two of its own by then
    ("SIGKILL to rank 0", OFTEN, 7, to_rank(0, signal.SIGKILL)),
]


@dataclass
class Leg:
    stopped: Result  # the launch the signal interrupted
    resumed: Result  # the next launch of the chain, which resumes from what the stopped one left


@dataclass
class Chain:
    legs: dict  # name -> Leg
    final: Result  # the last launch, which ran to the end
    truncated: Path  # the newest checkpoint when the last launch started, truncated by the test
    fallback: tuple  # (step, path): the one before it


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted run every other run must match bit for bit."""
    return demo_baseline(tmp_path_factory)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Chain:
    """Runs the legs; asserts nothing, so each test reports its own leg's failure."""
    base = tmp_path_factory.mktemp("chain")
    results, step = [], 0
    for _, spec, after, send in LEGS:
        results.append(interrupt(start(base, spec), step + after, send))
        step = stop_step(results[-1])
    # the last leg also resumes past a newest checkpoint that does not verify
    (_, truncated), fallback = ckpt.list_checkpoints(base / "checkpoints")[:2]
    truncate(truncated / ckpt.STATE)
    results.append(run(base, LEGS[-1][1]))
    legs = {name: Leg(results[i], results[i + 1]) for i, (name, *_) in enumerate(LEGS)}
    return Chain(legs, results[-1], truncated, fallback)


def truncate(path: Path) -> None:
    """Keep the first third of a file, as a save cut short by a full disk might."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def interrupt(launch, step: int, send) -> Result:
    """Signal a launch once it logs `step` (unless it ended before) and wait for it to end."""
    run_dir = launch.run_dir()
    wait_until(lambda: logged_step(run_dir) >= step or launch.proc.poll() is not None, 120, f"step {step}")
    if launch.proc.poll() is None:
        send(launch, run_dir)
    return launch.wait()


def stop_step(result: Result) -> int:
    """The step a launch stopped at (its exit record), else the last one it logged (a killed rank)."""
    try:
        return result.exit_record(0)["step"]
    except (OSError, ValueError, KeyError):
        return logged_step(result.run_dir)


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


def assert_stopped_resumably(stopped: Result) -> tuple:
    """Both ranks stopped at one agreed step and checkpointed it; their exit records."""
    assert stopped.rc == exitcodes.STOPPED_RESUMABLE, stopped.explain()
    e0, e1 = stopped.exit_record(0), stopped.exit_record(1)
    assert e0["status"] == e1["status"] == "stopped" and e0["step"] == e1["step"]  # agreed on one step
    assert e0["checkpoint"].endswith(ckpt.step_dir_name(e0["step"]))
    return e0, e1


def assert_resumed_from_its_checkpoint(leg: Leg) -> None:
    step = leg.stopped.exit_record(0)["step"]
    where = leg.stopped.base / "checkpoints" / ckpt.step_dir_name(step)
    assert f"resuming from {where}: step {step}, epoch {step // STEPS_PER_EPOCH}" in leg.resumed.log(), \
        leg.resumed.explain()


def assert_ends_like_the_baseline(chain: Chain, baseline: Result) -> None:
    assert chain.final.rc == 0, chain.final.explain()
    assert chain.final.final_loss == baseline.final_loss
    assert_same_bits(final_state(baseline.base), final_state(chain.final.base))


def test_sigterm_mid_epoch_with_loader_workers_resumes_bit_for_bit(chain, baseline):
    leg = chain.legs["SIGTERM to rank 1"]
    e0, e1 = assert_stopped_resumably(leg.stopped)
    assert (e1["reason"], e0["reason"]) == ("SIGTERM", "another rank")
    assert 8 <= e0["step"] < STEPS_PER_EPOCH, "the stop should land in the middle of the first epoch"
    assert_resumed_from_its_checkpoint(leg)  # epoch 0
    assert_ends_like_the_baseline(chain, baseline)


def test_sighup_to_the_launcher_checkpoints_and_stops_like_sigterm(chain, baseline):
    leg = chain.legs["SIGHUP to the launcher"]
    e0, e1 = assert_stopped_resumably(leg.stopped)
    assert "SIGHUP" in (e0["reason"], e1["reason"]), (e0, e1)
    assert_resumed_from_its_checkpoint(leg)
    assert_ends_like_the_baseline(chain, baseline)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGUSR2])
def test_stop_signal_to_the_launcher_with_loader_workers_checkpoints(chain, baseline, stop_signal):
    leg = chain.legs[f"{stop_signal.name} to the launcher"]
    assert_stopped_resumably(leg.stopped)
    assert "is killed by signal" not in leg.stopped.log()
    assert_resumed_from_its_checkpoint(leg)
    assert_ends_like_the_baseline(chain, baseline)


def test_sigkill_of_a_rank_then_resume_from_the_last_valid_checkpoint(chain, baseline):
    leg = chain.legs["SIGKILL to rank 0"]
    assert leg.stopped.rc not in (0, exitcodes.STOPPED_RESUMABLE), leg.stopped.explain()
    assert "resuming from" in leg.resumed.log()
    assert_ends_like_the_baseline(chain, baseline)  # the leg resumed from the kill is the chain's last


def test_truncated_newest_checkpoint_is_reported_and_resume_falls_back(chain, baseline):
    log = chain.final.log()
    assert "skipping checkpoint" in log and chain.truncated.name in log and "truncated" in log
    step, fallback = chain.fallback
    assert f"resuming from {fallback}: step {step}," in log
    assert chain.truncated.with_name(chain.truncated.name + ".corrupt").is_dir()  # kept aside for a look
    assert_ends_like_the_baseline(chain, baseline)


def test_every_checkpoint_truncated_restarts_from_step_0_with_a_loud_warning(baseline, tmp_path):
    shutil.copytree(baseline.base / "checkpoints", tmp_path / "checkpoints")
    found = ckpt.list_checkpoints(tmp_path / "checkpoints")
    for _, path in found:
        truncate(path / ckpt.STATE)

    resumed = run(tmp_path, demo_spec())
    assert resumed.rc == 0, resumed.explain()
    log = resumed.log()
    assert f"{len(found)} checkpoints found in" in log and "none could be used" in log
    assert "starting from step 0: all progress of this run is lost" in log
    assert "no checkpoint to resume from" not in log and "resuming from" not in log
    assert all(path.with_name(path.name + ".corrupt").is_dir() for _, path in found)
    assert resumed.final_loss == baseline.final_loss  # trained again from the start, exactly
