"""`hpcgpu run local` end to end: real node agent, real torch elastic, real gloo ranks on CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.session_once import session_once
from tests.helpers.user_script_run import SCRIPT, user_script_run

pytestmark = pytest.mark.slow

SMALL = {
    "name": "t",
    "entry": {"task": "hpcgpu.examples.mlp:make_task", "task_args": {"n_samples": 512}},
    "train": {"batch_size": 16, "epochs": 1, "log_every": 4, "seed": 3},
    "checkpoint": {"every_steps": 8},
    "logging": {"progress": "lines"},
}


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


@pytest.fixture(scope="module")
def two_demo_runs(tmp_path_factory) -> tuple[Path, list[int], list[tuple[str, str]]]:
    """Two runs of the same demo spec started together in one directory: the demo test reads the first
    one's console and run dir, the concurrency test that both finished apart (two launches, not three:
    each costs ~9 CPU-s of imports before it trains). The second has one rank: what two runs started
    together could share is the run dir, the ports and the index, not anything between their ranks.
    Returns the directory, the exit codes and each launcher's (stdout, stderr)."""
    base = tmp_path_factory.mktemp("demo")
    spec = write(base, SMALL)
    env = {**os.environ, "HPCGPU_HOME": str(base / "home"), "OMP_NUM_THREADS": "1"}
    procs = []
    for i, nproc in enumerate(("2", "1")):
        with open(base / f"launch{i}.out", "w") as out, open(base / f"launch{i}.err", "w") as err:
            argv = [sys.executable, "-m", "hpcgpu", "run", "local", "-f", spec, "--nproc", nproc]
            procs.append(subprocess.Popen(argv, cwd=base, env=env, stdout=out, stderr=err))
    codes = [p.wait(timeout=240) for p in procs]
    return base, codes, [((base / f"launch{i}.out").read_text(), (base / f"launch{i}.err").read_text())
                         for i in range(2)]


def test_demo_trains_on_two_gloo_ranks(two_demo_runs):
    base, codes, outs = two_demo_runs
    (stdout, stderr), code = outs[0], codes[0]  # the 2-rank one
    assert code == 0, stdout + stderr
    run_dir = Path(re.search(r"run dir (\S+)", stdout).group(1))
    assert run_dir.parent == base / "runs" and run_dir.is_dir(), stdout
    assert "tensorboard --logdir" in stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    losses = [float(line.split("loss ")[1].split()[0]) for line in stdout.splitlines() if line.startswith("step ")]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses  # rank 0's progress reached the console
    assert summary["final_loss"] < losses[0]
    assert (run_dir / "logs" / "rank0.log").exists() and (run_dir / "logs" / "rank1.log").exists()
    assert list((run_dir / "tb").iterdir()), "no TensorBoard events"
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"


@pytest.fixture(scope="module")
def user_script(tmp_path_factory) -> dict:
    # the same launch as tests/cli/test_plan_contract_run.py's: made once per session
    return session_once(tmp_path_factory, "user-script-run",
                        lambda: user_script_run(tmp_path_factory.mktemp("user-script")))


def test_user_script_runs_like_torchrun(user_script):
    out = user_script["run"]
    assert out["rc"] == 0, out["stdout"] + out["stderr"]
    assert "script done" in out["stdout"]
    (run_dir,) = map(Path, user_script["run_dirs"])
    assert run_dir.name.startswith("train-")
    envs = user_script["envs"]
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["argv"] == ["--lr", "3"] and envs[0]["is_main"] and not envs[1]["is_main"]
    assert envs[0]["HPCGPU_RUN_DIR"] == str(run_dir) and envs[0]["HPCGPU_RESTART_COUNT"] == "0"
    assert envs[0]["MASTER_ADDR"] and envs[0]["MASTER_PORT"]


def test_ranks_are_forked_from_one_preloaded_process_and_look_freshly_started(user_script):
    """agent/zygote.py: both ranks are children of one process that had imported torch already (not of
    the launcher, which is the node agent), each with what a fresh rank has: the rank's command line in
    `ps`, its own session, its own numpy seed, and nothing of the zygote's socket."""
    envs = user_script["envs"]
    assert len(envs) == 2 and None not in envs, user_script["run"]
    assert len({e["ppid"] for e in envs}) == 1 and len({e["pid"] for e in envs}) == 2
    for seen in envs:
        assert seen["cmdline"][1:] == ["-m", "hpcgpu.worker", "train.py", "--lr", "3"], seen["cmdline"]
        assert seen["parent_cmdline"] == seen["cmdline"]  # the preloaded process, not the launcher
        assert seen["leads_its_session"] and not seen["zygote_fd_set"]
    assert envs[0]["numpy_draw"] != envs[1]["numpy_draw"]


def test_a_rank_that_raises_is_named_with_its_traceback(tmp_path):
    (tmp_path / "train.py").write_text(SCRIPT)
    out = hpcgpu(["run", "local", "--nproc", "2", "--", "train.py", "--fail"], tmp_path, tmp_path / "home")
    assert out.returncode == 1
    assert "rank 1 (local rank 1" in out.stderr and "ValueError: boom on rank 1" in out.stderr


def test_two_runs_started_together_both_finish(two_demo_runs):
    base, codes, outs = two_demo_runs
    assert codes == [0, 0], outs
    assert len(list((base / "runs").iterdir())) == 2
    assert len({re.search(r"run dir (\S+)", stdout).group(1) for stdout, _ in outs}) == 2, outs  # each its own


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
