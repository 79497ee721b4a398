"""Hostile input: YAML object tags, shell metacharacters, pickled checkpoints, secrets, file modes, sockets.

The live-run tests start the real `hpcgpu run local` and look at what it leaves behind (every file of
the run directory, the index, the console) and at the sockets its processes listen on.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from tests.helpers.relkit import (REPO, alive, base_env, hpcgpu, kill_session, process_tree, small_spec, start,
                                  wait_until, write_spec)

PACKAGE = REPO / "hpcgpu"


# ---------------------------------------------------------------- no shell, anywhere


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
               "asyncio.create_subprocess_shell", "pty.spawn", "eval", "exec"}


def test_the_package_never_runs_a_shell():
    """No shell=True, os.system, os.popen, eval/exec, and no argv that is `sh -c`/`bash -c` STRING."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source, str(path))
        lines = source.splitlines()
        for call in _calls(tree):
            name = _dotted(call.func)
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            # the one documented exception, with its reason on the line: the worker runs the user's script
            if name == "exec" and "# shell-exception: the user's own script file" in lines[call.lineno - 1]:
                continue
            if name in SHELL_CALLS:
                found.append(f"{where}: {name}()")
            for kw in call.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where}: shell={ast.unparse(kw.value)}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.List, ast.Tuple)):
                words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                for a, b in zip(words, words[1:]):
                    if a.rsplit("/", 1)[-1] in ("sh", "bash", "zsh", "dash") and b == "-c":
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}: [{a!r}, '-c', ...]")
    assert not found, "shell use in the package:\n" + "\n".join(found)


# ---------------------------------------------------------------- YAML object tags


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:builtins.open [{marker}, w]",
    "!!python/object/apply:os.system [touch {marker}]",
    "!!python/object/new:subprocess.Popen [[touch, {marker}]]",
    "!!python/name:os.system",
    "!!python/module:os",
])
@pytest.mark.parametrize("verb", [["spec", "validate"], ["spec", "show"], ["run", "local", "--dry-run"], ["run", "local"]])
def test_yaml_tags_that_build_python_objects_are_refused(tmp_path, tag, verb):
    marker = tmp_path / "pwned"
    (tmp_path / "job.yaml").write_text(f"name: x\nenv:\n  A: {tag.format(marker=marker)}\n")
    out = hpcgpu([*verb, "-f", "job.yaml"], tmp_path, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not valid YAML" in out.stderr and "Python object tags" in out.stderr, out.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- shell metacharacters

ECHO_SCRIPT = """
import json, os, sys
json.dump({"argv": sys.argv, "evil": os.environ.get("EVIL"), "evil2": os.environ.get("EVIL2")},
          open(os.path.join(os.environ["HPCGPU_RUN_DIR"], "seen%s.json" % os.environ["RANK"]), "w"))
"""


def hostile_values(marks: Path) -> dict:
    return {
        "args": [f"$(touch {marks}/a)", f"`touch {marks}/b`", f"; touch {marks}/c", f"| touch {marks}/d",
                 f"&& touch {marks}/e", f"\ntouch {marks}/f", "'\"'"],
        "env": {"EVIL": f"$(touch {marks}/g); touch {marks}/h", "EVIL2": f"`touch {marks}/i`"},
    }


@pytest.mark.slow
def test_metacharacters_in_args_env_and_paths_never_execute(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "x $(touch marks-j) `touch marks-k`.py"  # a legal, if odd, file name
    script.write_text(ECHO_SCRIPT)
    values = hostile_values(marks)
    spec = small_spec(entry={"script": script.name, "args": values["args"]}, env=values["env"],
                      logging={"dir": "out;touch marks-l|$(touch marks-m)", "tensorboard": False},
                      checkpoint={"dir": str(tmp_path / "ck `touch marks-n`")})
    write_spec(tmp_path / "job.yaml", spec)

    dry = hpcgpu(["run", "local", "--nproc", 1, "-f", "job.yaml", "--dry-run"], tmp_path, timeout=60)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    done = start(["run", "local", "--nproc", 1, "-f", "job.yaml"], tmp_path).wait(90)
    assert done.rc == 0, done.text

    assert not list(marks.iterdir()) and not list(tmp_path.glob("marks-*")), "a metacharacter was executed"
    (run_dir,) = list((tmp_path / "out;touch marks-l|$(touch marks-m)").iterdir())
    seen = json.loads((run_dir / "seen0.json").read_text())
    assert seen["argv"][1:] == values["args"]  # every argument arrived byte for byte
    assert (seen["evil"], seen["evil2"]) == (values["env"]["EVIL"], values["env"]["EVIL2"])


@pytest.mark.parametrize("args", [["--name", "$(touch {m})", "--dry-run"], ["--name", "`touch {m}`"],
                                  ["--resume", "$(touch {m})"]])
def test_a_run_name_with_metacharacters_is_refused(tmp_path, args):
    marker = tmp_path / "pwned"
    out = hpcgpu(["run", "local", *[a.format(m=marker) for a in args]], tmp_path, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert not marker.exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- checkpoints: weights only


class Payload:
    """Unpickling this creates the file `path` (what a hostile checkpoint would do, less politely)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant_checkpoint(ckpt_dir: Path, step: int, marker: Path) -> Path:
    """A committed checkpoint (valid manifest) whose state.pt carries a pickled payload."""
    import torch

    from hpcgpu.worker import checkpoint as ckpt

    tmp = ckpt.begin(ckpt_dir, step)
    with open(tmp / ckpt.STATE, "wb") as f:
        torch.save({"format": 1, "model": Payload(marker)}, f)
    return ckpt.commit(tmp, step, {ckpt.STATE: ckpt.digest_file(tmp / ckpt.STATE)}, {"kind": "state"})


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    import torch

    from hpcgpu.worker import checkpoint as ckpt

    # the payload is real: an unrestricted load runs it
    canary = tmp_path / "canary"
    torch.save({"model": Payload(canary)}, tmp_path / "canary.pt")
    torch.load(tmp_path / "canary.pt", weights_only=False)
    assert canary.exists()

    marker = tmp_path / "pwned"
    path = plant_checkpoint(tmp_path / "ckpt", 5, marker)
    with pytest.raises(ckpt.CheckpointError, match="refusing to load .* pickled Python object"):
        ckpt.load_state(path)
    assert not marker.exists()


@pytest.mark.slow
def test_resume_refuses_a_hostile_checkpoint_and_runs_nothing_from_it(tmp_path):
    marker = tmp_path / "pwned"
    plant_checkpoint(tmp_path / "ckpt", 5, marker)
    spec = small_spec(checkpoint={"dir": str(tmp_path / "ckpt"), "every_steps": 5})
    done = start(["run", "local", "--nproc", 1, "-f", write_spec(tmp_path / "job.yaml", spec)], tmp_path).wait(90)
    assert done.rc == 1, done.text
    assert "refusing to load" in done.stderr and "pickled Python object" in done.stderr, done.text
    assert not marker.exists()


def test_an_fsdp_checkpoint_with_pickled_metadata_is_refused(tmp_path):
    import torch
    from torch import nn

    from hpcgpu.worker import checkpoint as ckpt
    from hpcgpu.worker.checkpoint_dcp import load_sharded

    marker = tmp_path / "pwned"
    shards = tmp_path / "step_00000005" / ckpt.SHARDS
    shards.mkdir(parents=True)
    (shards / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    model = nn.Linear(2, 2)
    with pytest.raises(ckpt.CheckpointError, match="refusing io.open"):
        load_sharded(tmp_path / "step_00000005", model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert not marker.exists(), "loading the FSDP checkpoint unpickled its .metadata"


# ---------------------------------------------------------------- one live run: secrets, modes, sockets

SECRETS = {"HF_TOKEN": "s3cr3t-from-the-shell-7f3a", "WANDB_API_KEY": "s3cr3t-in-the-spec-91bc",
           "DB_PASSWORD": "s3cr3t-in-the-spec-c0de"}

LIVE_SCRIPT = """
import hashlib, json, os, sys, time
import torch
from hpcgpu import dist
dist.init()
rank, run_dir = os.environ["RANK"], os.environ["HPCGPU_RUN_DIR"]
seen = {k: hashlib.sha256(os.environ.get(k, "").encode()).hexdigest() for k in sys.argv[1].split(",")}
json.dump(seen, open(os.path.join(run_dir, "seen%s.json" % rank), "w"))
print("secrets arrived:", sorted(k for k in sys.argv[1].split(",") if os.environ.get(k)), flush=True)
dist.save_checkpoint({"w": torch.ones(3)}, step=1)
open(os.path.join(run_dir, "ready%s" % rank), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(run_dir, "go")) and time.time() < deadline:
    time.sleep(0.05)
dist.barrier()
"""


def _listening_sockets() -> dict[str, str]:
    """inode -> local address (hex, as in /proc/net/tcp*) of every listening TCP socket."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[fields[9]] = fields[1]
    return found


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _is_loopback(hex_addr: str) -> bool:
    host = hex_addr.split(":")[0]
    if len(host) == 8:  # IPv4, little-endian: 0100007F is 127.0.0.1
        return host[6:8] == "7F"
    if host == "00000000000000000000000001000000":  # ::1
        return True
    return host.startswith("0000000000000000FFFF0000") and host[30:32] == "7F"  # ::ffff:127.x.x.x


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A 2-rank run with secrets in the shell and in the spec, a custom checkpoint dir, paused mid-run."""
    tmp = tmp_path_factory.mktemp("live")
    (tmp / "live.py").write_text(LIVE_SCRIPT)
    spec = small_spec(entry={"script": "live.py", "args": [",".join(SECRETS)]},
                      env={"WANDB_API_KEY": SECRETS["WANDB_API_KEY"], "DB_PASSWORD": SECRETS["DB_PASSWORD"],
                           "PLAIN": "visible"},
                      checkpoint={"dir": str(tmp / "private" / "ckpts")})
    write_spec(tmp / "job.yaml", spec)
    env = base_env(tmp / "home", {"HF_TOKEN": SECRETS["HF_TOKEN"]})
    dry = hpcgpu(["run", "local", "--nproc", 2, "-f", "job.yaml", "--dry-run"], tmp, env, timeout=60)
    run = start(["run", "local", "--nproc", 2, "-f", "job.yaml"], tmp, env)
    try:
        ready = wait_until(lambda: list((tmp / "runs").glob("*/ready1")) and list((tmp / "runs").glob("*/ready0")),
                           90, "both ranks to pause")
        run_dir = ready[0].parent
        tree = [pid for pid in process_tree(run.proc.pid) if alive(pid)]
        sockets = _listening_sockets()
        listeners = {pid: [sockets[i] for i in _socket_inodes(pid) if i in sockets] for pid in tree}
        (run_dir / "go").touch()
        done = run.wait(90)
    except BaseException:
        kill_session(run.proc)
        raise
    yield {"tmp": tmp, "dry": dry, "done": done, "run_dir": run_dir, "listeners": listeners, "tree": tree}


@pytest.mark.slow
def test_secrets_never_reach_the_dry_run_the_run_dir_the_index_or_the_console(live_run):
    tmp, done, run_dir = live_run["tmp"], live_run["done"], live_run["run_dir"]
    assert live_run["dry"].returncode == 0 and done.rc == 0, live_run["dry"].stderr + done.text
    # the ranks did get every value (through their environment)
    want = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in SECRETS.items()}
    assert json.loads((run_dir / "seen0.json").read_text()) == want
    assert json.loads((run_dir / "seen1.json").read_text()) == want
    assert "WANDB_API_KEY=<redacted>" in live_run["dry"].stdout and "PLAIN=visible" in live_run["dry"].stdout

    leaks = []
    outputs = {"dry-run stdout": live_run["dry"].stdout, "dry-run stderr": live_run["dry"].stderr,
               "console stdout": done.stdout, "console stderr": done.stderr}
    for where, text in outputs.items():
        leaks += [f"{where}: {name}" for name, value in SECRETS.items() if value in text]
    files = [p for root in (run_dir, tmp / "home", tmp / "private") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "state.pt" for p in files) and any(p.name == "rank1.log" for p in files)
    for path in files:
        data = path.read_bytes()
        leaks += [f"{path}: {name}" for name, value in SECRETS.items() if value.encode() in data]
    assert not leaks, "secret values written out:\n" + "\n".join(leaks)


@pytest.mark.slow
def test_run_checkpoint_and_state_directories_are_private(live_run):
    tmp, run_dir = live_run["tmp"], live_run["run_dir"]
    dirs = [run_dir, run_dir / "logs", run_dir / "checkpoints", run_dir / "exit", tmp / "private" / "ckpts",
            tmp / "home"]
    modes = {str(d): oct(stat.S_IMODE(d.stat().st_mode)) for d in dirs}
    assert set(modes.values()) == {"0o700"}, modes
    for log in (run_dir / "logs").glob("rank*.log"):
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log


@pytest.mark.slow
def test_a_single_node_run_listens_on_loopback_only(live_run):
    listeners = live_run["listeners"]
    flat = [(pid, addr) for pid, addrs in listeners.items() for addr in addrs]
    assert len(flat) >= 2, f"expected the rendezvous store and rank sockets, found {listeners}"
    exposed = [(pid, addr) for pid, addr in flat if not _is_loopback(addr)]
    assert not exposed, f"listening beyond loopback (pid, /proc/net/tcp address): {exposed}"


# ---------------------------------------------------------------- withheld secrets on resume


def test_a_withheld_secret_must_come_from_the_environment(tmp_path):
    from hpcgpu.agent.node import rank_environment
    from hpcgpu.contract.errors import UserError
    from tests.helpers.plans import plan_for

    plan = plan_for("env: {NEVER_SEEN_TOKEN: s3cr3t}\n")
    assert plan.env["NEVER_SEEN_TOKEN"] == "<redacted>"
    with pytest.raises(UserError, match="export NEVER_SEEN_TOKEN"):
        rank_environment(plan, {}, {})
    assert rank_environment(plan, {"NEVER_SEEN_TOKEN": "from-the-shell"}, {})["NEVER_SEEN_TOKEN"] == "from-the-shell"
    # a run started here hands the value over explicitly (never through a file or a global)
    assert rank_environment(plan, {}, {"NEVER_SEEN_TOKEN": "s3cr3t"})["NEVER_SEEN_TOKEN"] == "s3cr3t"


def test_docs_security_names_only_tests_that_exist():
    import re

    text = (REPO / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(test_\w+)`", text))
    defined = {m for p in (REPO / "tests").rglob("test_*.py")
               for m in re.findall(r"^def (test_\w+)", p.read_text(), re.M)}
    assert named and not named - defined, f"docs/security.md names missing tests: {sorted(named - defined)}"
