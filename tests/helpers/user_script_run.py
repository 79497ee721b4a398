"""One 2-rank `hpcgpu run local -- train.py --lr 3` of a script that records what each rank saw, run
once per test session and read by two modules: tests/cli/test_run_local.py (the ranks get torchrun's
variables and hpcgpu's) and tests/cli/test_plan_contract_run.py (the plan that runs is the dry run's,
and the ranks get their planned device without the host layer). Each such run costs two torch imports
per rank; the two tests ask different questions of the same launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: each rank writes env<RANK>.json into its run dir; rank 1 raises when given --fail
SCRIPT = """
import json, os, sys
from hpcgpu import dist
info = dist.init()
keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "HPCGPU_RUN_DIR", "HPCGPU_CKPT_DIR", "HPCGPU_RESUME_FROM", "HPCGPU_RESTART_COUNT"]
out = {k: os.environ.get(k) for k in keys}
out["argv"] = sys.argv[1:]
out["is_main"] = dist.is_main()
out["device"] = os.environ.get("HPCGPU_DEVICE")
out["dist_device"] = str(dist.device())
out["backend"] = __import__("torch").distributed.get_backend()
# what the rank loaded by now: neither pydantic nor the host layer belongs in a rank
out["loaded"] = sorted(m for m in sys.modules
                       if m.split(".")[0] == "pydantic" or m.startswith(("hpcgpu.host", "hpcgpu.cli")))
# how the rank was started (agent/zygote.py): its command line and its parent's, its session, and
# what a fresh interpreter would have (its own numpy seed, no zygote socket, Python's SIGINT handler)
def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [w.decode() for w in f.read().split(b"\\0") if w]
out["pid"], out["ppid"] = os.getpid(), os.getppid()
out["cmdline"], out["parent_cmdline"] = cmdline(os.getpid()), cmdline(os.getppid())
out["leads_its_session"] = os.getsid(0) == os.getpid()
out["numpy_draw"] = __import__("numpy").random.random()
out["zygote_fd_set"] = "HPCGPU_ZYGOTE_FD" in os.environ
with open(os.path.join(os.environ["HPCGPU_RUN_DIR"], f"env{info.rank}.json"), "w") as f:
    json.dump(out, f)
dist.print0("script done")
if os.environ["RANK"] == "1" and "--fail" in sys.argv:
    raise ValueError("boom on rank 1")
"""

#: the launch, as a user types it; the dry run is the same command with --dry-run --json
ARGS = ["run", "local", "--nproc", "2", "--", "train.py", "--lr", "3"]


def hpcgpu(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCGPU_HOME": str(cwd / "home"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hpcgpu", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def user_script_run(directory: Path) -> dict:
    """The dry run, then the run itself, in `directory`; everything the tests look at, as JSON."""
    (directory / "train.py").write_text(SCRIPT)
    dry = hpcgpu([*ARGS[:4], "--dry-run", "--json", *ARGS[4:]], directory)
    runs_after_dry_run = (directory / "runs").exists()
    out = hpcgpu(ARGS, directory)
    run_dirs = sorted(str(p) for p in (directory / "runs").iterdir()) if (directory / "runs").is_dir() else []
    result = {"dry": {"rc": dry.returncode, "stdout": dry.stdout, "stderr": dry.stderr},
              "runs_after_dry_run": runs_after_dry_run,
              "run": {"rc": out.returncode, "stdout": out.stdout, "stderr": out.stderr},
              "run_dirs": run_dirs, "envs": [], "plan": None, "plan_mode": None}
    if len(run_dirs) == 1:
        run_dir = Path(run_dirs[0])
        result["envs"] = [json.loads(p.read_text()) if p.exists() else None
                          for p in (run_dir / "env0.json", run_dir / "env1.json")]
        plan = run_dir / "plan.json"
        if plan.exists():
            result["plan"] = plan.read_text()
            result["plan_mode"] = oct(plan.stat().st_mode & 0o777)
    return result
