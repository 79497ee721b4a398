"""Each launch form of item 1 of issue 13 against plain torchrun on the same script: the ranks see
the same sys.argv and torchrun's variables, and a failing rank gives the same exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, os, sys, time
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING")
# forked from hpcgpu's preloaded process (agent/zygote.py): its parent runs the rank's very command line
forked = open(f"/proc/{os.getppid()}/cmdline", "rb").read() == open("/proc/self/cmdline", "rb").read()
seen = {"argv": sys.argv, "env": {k: os.environ.get(k) for k in keys}, "name": __name__, "forked": forked,
        "script_dir_first": sys.path[0] == os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv[0].endswith(".py") else None}
out, rank = os.environ["PROBE_OUT"], os.environ["RANK"]
with open(os.path.join(out, f".rank{rank}.tmp"), "w") as f:
    json.dump(seen, f)
os.replace(os.path.join(out, f".rank{rank}.tmp"), os.path.join(out, f"rank{rank}.json"))  # whole or absent
if os.environ.get("PROBE_FAIL_RANK") == rank:
    # fail once every rank has written what it saw: the launch's teardown then cuts no rank short
    deadline = time.monotonic() + 60
    while len([n for n in os.listdir(out) if n.endswith(".json")]) < int(os.environ["WORLD_SIZE"]):
        assert time.monotonic() < deadline, os.listdir(out)
        time.sleep(0.02)
    sys.exit(3)
"""

#: the command after torchrun's options / after hpcgpu's `--`, for each form
FORMS = {
    "script": (["probe.py", "a", "--b"], ["probe.py", "a", "--b"]),
    "interpreter with -u": (["--no-python", "python", "-u", "probe.py", "a"], ["python", "-u", "probe.py", "a"]),
    "module": (["-m", "probepkg.probe", "a", "--b"], ["-m", "probepkg.probe", "a", "--b"]),
}


def launch(tmp_path: Path, launcher: str, form: str, fail_rank: str = "", fork: bool = True) -> tuple[int, dict]:
    out = tmp_path / f"{launcher}-{form.replace(' ', '_')}-{fail_rank or 'ok'}"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCGPU_", "SLURM_", "PYTHONUNBUFFERED"))}
    env.update(PROBE_OUT=str(out), PROBE_FAIL_RANK=fail_rank, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), HPCGPU_HOME=str(tmp_path / "home"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    if not fork:
        env["HPCGPU_FORK_RANKS"] = "0"
    torchrun_cmd, hpcgpu_cmd = FORMS[form]
    if launcher == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *torchrun_cmd]
    else:
        argv = [sys.executable, "-m", "hpcgpu", "run", "local", "--nproc", "2", "--", *hpcgpu_cmd]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    seen = {p.stem: json.loads(p.read_text()) for p in out.glob("rank*.json")}
    return done.returncode, seen


@pytest.fixture
def probe_dir(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "probepkg").mkdir()
    (tmp_path / "probepkg" / "__init__.py").write_text("")
    (tmp_path / "probepkg" / "probe.py").write_text(PROBE)
    return tmp_path


def assert_same_as_torchrun(torchrun: dict, hpcgpu: dict, forked: bool = True) -> None:
    """What each rank saw under hpcgpu is what it saw under torchrun, apart from the rendezvous address
    and how it was started (forked from the preloaded process unless HPCGPU_FORK_RANKS=0)."""
    assert sorted(torchrun) == sorted(hpcgpu) == ["rank0", "rank1"]
    for rank in ("rank0", "rank1"):
        t, h = torchrun[rank], hpcgpu[rank]
        assert (t["forked"], h["forked"]) == (False, forked), rank
        assert h["argv"] == t["argv"], rank  # the script's path as typed, or the module's file
        assert h["name"] == t["name"] == "__main__"
        assert h["script_dir_first"] == t["script_dir_first"]
        same = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                "TORCHELASTIC_RESTART_COUNT")
        assert {k: h["env"][k] for k in same} == {k: t["env"][k] for k in same}, rank
        assert h["env"]["MASTER_ADDR"] and h["env"]["MASTER_PORT"]  # a rendezvous address, each its own
        # the one deliberate difference: torch elastic hands ranks 1, hpcgpu keeps torch's own default, 3
        assert (t["env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"], h["env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"]) == ("1", "3")


# the script form is checked on the failing launches below: the ranks see the same there (rank 1 fails
# only after both wrote what they saw), and a launch pair costs ~8 CPU-s of start-up
# the module form runs fresh ranks (HPCGPU_FORK_RANKS=0), so that path is held to torchrun's too
@pytest.mark.parametrize("form, fork", [(form, form != "module") for form in FORMS if form != "script"])
def test_the_ranks_see_what_torchrun_gives_them(probe_dir, form, fork):
    rc_t, torchrun = launch(probe_dir, "torchrun", form)
    rc_h, hpcgpu = launch(probe_dir, "hpcgpu", form, fork=fork)
    assert (rc_t, rc_h) == (0, 0)
    assert_same_as_torchrun(torchrun, hpcgpu, forked=fork)


def test_a_failing_rank_fails_the_launch_like_torchrun_and_the_script_form_sees_what_torchrun_gives(probe_dir):
    rc_t, torchrun = launch(probe_dir, "torchrun", "script", fail_rank="1")
    rc_h, hpcgpu = launch(probe_dir, "hpcgpu", "script", fail_rank="1")
    assert rc_t == rc_h == 1
    assert_same_as_torchrun(torchrun, hpcgpu)
