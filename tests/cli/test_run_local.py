"""`hpcgpu run local` end to end: real node agent, real torch elastic, real gloo ranks on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

SMALL = {
    "name": "t",
    "entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 512}},
    "train": {"batch_size": 16, "epochs": 1, "log_every": 4, "seed": 3},
    "checkpoint": {"every_steps": 8},
    "logging": {"progress": "lines"},
}

SCRIPT = """
import json, os, sys
from hpcgpu import dist
dist.init()
keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "HPCGPU_RUN_DIR", "HPCGPU_CKPT_DIR", "HPCGPU_RESUME_FROM", "HPCGPU_RESTART_COUNT"]
out = {k: os.environ.get(k) for k in keys}
out["argv"] = sys.argv[1:]
out["is_main"] = dist.is_main()
with open(os.path.join(os.environ["HPCGPU_RUN_DIR"], f"env{os.environ['RANK']}.json"), "w") as f:
    json.dump(out, f)
dist.print0("script done")
if os.environ["RANK"] == "1" and "--fail" in sys.argv:
    raise ValueError("boom on rank 1")
"""


def hpcgpu(args, cwd, home, timeout=180, **kw):
    env = {**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def start(args, cwd, home):
    env = {**os.environ, "HPCGPU_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def write(tmp_path: Path, spec: dict, name="job.yaml") -> str:
    (tmp_path / name).write_text(yaml.safe_dump(spec))
    return name


def only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = list((tmp_path / "runs").iterdir())
    return run_dir


def test_demo_trains_on_two_gloo_ranks(tmp_path):
    out = hpcgpu(["run", "local", "-f", write(tmp_path, SMALL), "--nproc", "2"], tmp_path, tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = only_run_dir(tmp_path)
    assert f"run dir {run_dir}" in out.stdout and "tensorboard --logdir" in out.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = [float(line.split("loss ")[1].split()[0]) for line in out.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses  # rank 0's progress reached the console
    assert summary["final_loss"] < losses[0]
    assert (run_dir / "logs" / "rank0.log").exists() and (run_dir / "logs" / "rank1.log").exists()
    assert list((run_dir / "tb").iterdir()), "no TensorBoard events"
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"


def test_user_script_runs_like_torchrun(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    out = hpcgpu(["run", "local", "--nproc", "2", "--", "train.py", "--lr", "3"], tmp_path, tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "script done" in out.stdout
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith("train-")
    envs = [json.loads((run_dir / f"env{r}.json").read_text()) for r in (0, 1)]
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["argv"] == ["--lr", "3"] and envs[0]["is_main"] and not envs[1]["is_main"]
    assert envs[0]["HPCGPU_RUN_DIR"] == str(run_dir) and envs[0]["HPCGPU_RESTART_COUNT"] == "0"
    assert envs[0]["MASTER_ADDR"] and envs[0]["MASTER_PORT"]


def test_a_rank_that_raises_is_named_with_its_traceback(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    out = hpcgpu(["run", "local", "--nproc", "2", "--", "train.py", "--fail"], tmp_path, tmp_path / "home")
    assert out.returncode == 1
    assert "rank 1 (local rank 1" in out.stderr and "ValueError: boom on rank 1" in out.stderr


def test_two_runs_started_together_both_finish(tmp_path):
    spec = write(tmp_path, SMALL)
    procs = [start(["run", "local", "-f", spec, "--nproc", "2"], tmp_path, tmp_path / "home") for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(list((tmp_path / "runs").iterdir())) == 2


@pytest.mark.parametrize(
    "files, args, message",
    [
        ({"job.yaml": "train: [1\n"}, ["-f", "job.yaml"], "not valid YAML"),
        ({"job.yaml": "trian: {}\n"}, ["-f", "job.yaml"], "trian (line 1): unknown key"),
        ({"job.yaml": "train: {batch_size: many}\n"}, ["-f", "job.yaml"], "train.batch_size (line 1)"),
        ({}, ["--gpus", "4"], "asked for 4 GPU(s) per node, but this machine has 0"),
        ({}, ["--", "missing.py"], "entry.script 'missing.py' not found"),
        ({}, ["-f", "nope.yaml"], "spec file 'nope.yaml' not found"),
    ],
)
def test_bad_input_is_exit_2_and_starts_nothing(tmp_path, files, args, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = hpcgpu(["run", "local", *args], tmp_path, tmp_path / "home", timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()


def _wait_for_step(proc, step_prefix="step ", timeout=120):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if line.startswith(step_prefix):
            return seen
    raise AssertionError("no training step seen:\n" + "".join(seen))


def test_ctrl_c_stops_cleanly_then_resume_continues(tmp_path):
    spec = dict(SMALL, train={**SMALL["train"], "epochs": 400}, checkpoint={"every_steps": 100000})
    proc = start(["run", "local", "-f", write(tmp_path, spec), "--nproc", "2"], tmp_path, tmp_path / "home")
    _wait_for_step(proc)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, rest
    run_dir = only_run_dir(tmp_path)
    marks = [json.loads((run_dir / "exit" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {m["status"] for m in marks} == {"stopped"} and marks[0]["step"] == marks[1]["step"]
    stopped_at = marks[0]["step"]
    assert f"hpcgpu run local --resume {run_dir.name}" in rest

    proc = start(["run", "local", "--resume", run_dir.name[:12]], tmp_path / "runs", tmp_path / "home")
    seen = "".join(_wait_for_step(proc))
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, seen + rest
    assert f"step {stopped_at}" in seen and f"resuming from {run_dir}" in seen

    # status for scripts: one run as an object, the recent runs as a list of the same objects
    one = json.loads(hpcgpu(["status", run_dir.name, "--json"], tmp_path, tmp_path / "home", timeout=60).stdout)
    assert (one["id"], one["backend"], one["state"], one["run_dir"]) == (run_dir.name, "local", "STOPPED", str(run_dir))
    assert one["restarts"] == 1 and one["last_checkpoint_step"] >= stopped_at
    listing = json.loads(hpcgpu(["status", "--json"], tmp_path, tmp_path / "home", timeout=60).stdout)
    assert listing == [one]

    # the Slurm resume refuses a local run (and any flag beside --resume), naming what to do instead
    out = hpcgpu(["submit", "slurm", "--resume", run_dir.name], tmp_path, tmp_path / "home", timeout=60)
    assert out.returncode == 2 and f"hpcgpu run local --resume {run_dir.name}" in out.stderr, out.stderr
    out = hpcgpu(["submit", "slurm", "--resume", run_dir.name, "--nodes", "2"], tmp_path, tmp_path / "home", timeout=60)
    assert out.returncode == 2 and "it takes no --nodes" in out.stderr, out.stderr


def test_documented_user_script_stops_and_resumes(tmp_path):
    script = str(Path(__file__).resolve().parents[2] / "examples" / "train_script.py")
    proc = start(["run", "local", "--nproc", "2", "--", script, "--steps", "100000", "--every", "20"], tmp_path, tmp_path / "home")
    _wait_for_step(proc)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, rest
    stopped = int(rest.split("stopping at step ")[1].split(":")[0])
    run_dir = only_run_dir(tmp_path)
    proc = start(["run", "local", "--resume", run_dir.name], tmp_path, tmp_path / "home")
    seen = "".join(_wait_for_step(proc, step_prefix="resumed at step"))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert f"resumed at step {stopped}" in seen
