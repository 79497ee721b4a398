"""The one launch and resume flow behind `run local`, `submit slurm` and `train` without a plan.

spec -> facts (gathered once) -> backend.plan -> backend.preflight -> run dir with plan.json ->
backend.launch. A dry run stops after the plan and prints it (as text, or as the very JSON that
would be written). Bad input raises UserError before anything is created.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from hpcgpu.backends import Backend, LaunchHandle, get_backend
from hpcgpu.contract.checkpoints import list_checkpoints, progress_lost
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan, plan_path
from hpcgpu.contract.procs import start_time
from hpcgpu.contract.runfiles import RESULT_FILE, read_json, write_json_atomic, write_private_text
from hpcgpu.host.facts import HostFacts, gather_facts
from hpcgpu.host.runs import RunRecord, create_run_dir, find_run, new_run_id, register, update_record
from hpcgpu.host.secrets import withheld
from hpcgpu.host.spec import Spec, apply_overrides, dump_spec, env_overrides, load_spec

#: how `--resume` continues a run of each backend (for the hint when the backends differ)
RESUME_COMMANDS = {"local": "hpcgpu run local --resume {id}", "slurm": "hpcgpu submit slurm --resume {id}"}
#: the flag with which `--resume` goes on although every checkpoint of the run is broken
ALLOW_RESTART_FLAG = "--allow-restart-from-zero"


@dataclass(frozen=True)
class Launched:
    """A plan that was started, and what its backend said."""

    plan: Plan
    handle: LaunchHandle
    backend: Backend


# ---------------------------------------------------------------- the spec with its overrides


#: interpreter flags a rank honours through the environment variable with the same effect (ranks run
#: `python -m hpcgpu.worker`, so the flags themselves cannot reach the user's script)
_FLAG_ENV = {"u": ("PYTHONUNBUFFERED", "1"), "B": ("PYTHONDONTWRITEBYTECODE", "1"), "O": ("PYTHONOPTIMIZE", "1")}
#: -X options with an environment equivalent (https://docs.python.org/3/using/cmdline.html#cmdoption-X)
_X_ENV = {"dev": "PYTHONDEVMODE", "faulthandler": "PYTHONFAULTHANDLER", "utf8": "PYTHONUTF8",
          "importtime": "PYTHONPROFILEIMPORTTIME", "tracemalloc": "PYTHONTRACEMALLOC"}


def is_interpreter(word: str) -> bool:
    """python, python3, python3.12, /usr/bin/python3, or this interpreter: `-- python train.py`."""
    return word == sys.executable or re.fullmatch(r"python(\d+(\.\d+)?)?", Path(word).name) is not None


def entry_from_command(cmd: tuple[str, ...]) -> dict[str, Any]:
    """`-- train.py --lr 3` -> a script entry; `-- -m pkg.mod args` -> a module entry; a leading
    interpreter with flags (`-- python -u train.py`) -> the same, the flags as their environment
    variables under "env" (raises UserError for a flag with no such variable)."""
    if cmd and is_interpreter(cmd[0]):
        env, rest = _interpreter_flags(cmd[1:])
        entry = entry_from_command(rest or ("",))
        if env:
            entry["env"] = env
        return entry
    if cmd[0] == "-m":
        if len(cmd) < 2:
            raise UserError("`-- -m` needs a module name, e.g. `-- -m mypkg.train`")
        return {"module": cmd[1], "args": list(cmd[2:])}
    return {"script": cmd[0], "args": list(cmd[1:])}


def _interpreter_flags(words: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The flags before the script or -m, as environment variables; and the words from there on."""
    env: dict[str, str] = {}
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-", "-m"):
        flag = words[i]
        if flag[1] in "WX":  # -W ARG, -WARG, -X OPT, -XOPT
            value = flag[2:] or (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if flag[2:] else 2
            if not value:
                raise UserError(f"`-- python {flag}` needs a value, e.g. `{flag} ignore`")
            if flag[1] == "W":
                env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), value]))
                continue
            name = _X_ENV.get(value.split("=")[0])
            if name is None:
                raise _unsupported(f"-X {value}")
            env[name] = value.split("=", 1)[1] if "=" in value else "1"
            continue
        letters = flag[1:]
        if not letters or any(c not in _FLAG_ENV for c in letters):
            raise _unsupported(flag)
        for c in letters:
            name, value = _FLAG_ENV[c]
            env[name] = str(letters.count("O")) if c == "O" else value
        i += 1
    return env, words[i:]


def _unsupported(flag: str) -> UserError:
    return UserError(
        f"`-- python {flag} ...`: the interpreter flag {flag} cannot reach the ranks (each runs "
        "`python -m hpcgpu.worker`, which then runs your script)",
        hint="drop it, or set its environment variable in the spec's env: (flags hpcgpu passes on this way: "
             "-u, -B, -O, -OO, -W, -X dev/faulthandler/utf8/importtime/tracemalloc)")


def load_with_overrides(spec_file: Optional[str], flags: Mapping[str, Any], cmd: tuple[str, ...] = (),
                        container: Optional[tuple[str, str]] = None) -> tuple[Spec, str]:
    """spec < HPCGPU_* environment < flags; `-- CMD` replaces the spec's entry; container: the
    --container flag's (image, runtime when neither the spec nor the flags name one)."""
    spec, source = load_spec(spec_file)
    spec = apply_overrides(spec, env_overrides(dict(os.environ)))
    overrides = {**dict(flags), **container_overrides(spec.container is not None, flags, container)}
    if cmd:
        e = entry_from_command(cmd)
        overrides.update({"entry.script": None, "entry.module": None, "entry.task": None, "entry.args": []})
        overrides.update({f"env.{name}": value for name, value in e.pop("env", {}).items()})
        overrides.update({f"entry.{k}": v for k, v in e.items()})
        spec = _clear_entry(spec, "module" if "module" in e else "script")
    if cmd and source == "<bundled demo>" and not flags.get("name"):
        # no spec file: name the run after the script or module, not "demo"
        stem = Path(overrides.get("entry.script") or overrides.get("entry.module") or "job").stem
        overrides["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", stem).strip("-._")[:40] or "job"
    spec = apply_overrides(spec, overrides)
    check_entry_exists(spec)
    return spec, source


def _clear_entry(spec: Spec, kind: str) -> Spec:
    data = spec.model_dump(mode="json")
    # a placeholder of the command's own kind: its override replaces it (None overrides are skipped,
    # so a script placeholder would stay next to a module and fail validation)
    data["entry"] = {kind: "_"}
    return Spec.model_validate(data)


def check_entry_exists(spec: Spec) -> None:
    """A missing script, or one that is not Python, is bad input: say so before anything starts."""
    if spec.entry.script and not Path(spec.entry.script).is_file():
        raise UserError(
            f"entry.script {spec.entry.script!r} not found (looked in {os.getcwd()})",
            hint="give the path relative to the directory you run hpcgpu from",
        )
    if spec.entry.script and not_python(Path(spec.entry.script)):
        raise UserError(
            f"entry.script {spec.entry.script!r} is not a Python script (a binary, or a #! line that names "
            "no Python): each rank runs it with Python, as torchrun does without --no-python",
            hint="launch the Python program it starts (`-- train.py ...` or `-- -m pkg.module ...`); "
                 "the ranks get torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) either way")


def not_python(path: Path) -> bool:
    """A file Python would refuse: an executable format (ELF), or a #! line naming another interpreter.
    A .py file, or one without a #! line, is taken as Python."""
    if path.suffix == ".py":
        return False
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"\x7fELF"):
        return True
    return head.startswith(b"#!") and b"python" not in head.split(b"\n", 1)[0]


def container_overrides(spec_has_container: bool, flags: Mapping[str, Any],
                        container: Optional[tuple[str, str]]) -> dict[str, Any]:
    """--container IMAGE: only the image changes; the runtime, binds and extra_args of the spec (or of
    --set container.*) stay; with neither, the backend's default runtime (podman locally, apptainer
    on Slurm). Applied with the other flags, so `--set container.runtime=docker --container IMG` is
    one valid container section, not a runtime without an image."""
    if not container or not container[0]:
        return {}
    image, default_runtime = container
    if spec_has_container or flags.get("container.runtime") is not None:
        return {"container.image": image}
    return {"container.image": image, "container.runtime": default_runtime}


# ---------------------------------------------------------------- new runs


@dataclass(frozen=True)
class RunName:
    """A run id chosen by the caller instead of drawn (the nodes of a run over several nodes share
    one), the name of this node's run directory under logging.dir, and variables the backend plans
    this node's part from (on top of the environment)."""

    run_id: str
    dir_name: str
    environ: Mapping[str, str] = field(default_factory=dict)


def _facts(backend_name: str, name: Optional[RunName]) -> HostFacts:
    return gather_facts(backend_name, {**os.environ, **name.environ} if name else None)


def run_location(spec: Spec, facts: HostFacts, name: Optional[RunName] = None) -> tuple[str, str]:
    """A fresh run id (or name's) and the absolute run dir it will get (nothing is created yet)."""
    run_id = name.run_id if name else new_run_id(spec.name)
    base = os.path.normpath(os.path.join(facts.cwd, spec.logging.dir))
    return run_id, os.path.join(base, name.dir_name if name else run_id)


def plan_new(spec: Spec, backend_name: str, facts: Optional[HostFacts] = None, name: Optional[RunName] = None) -> Plan:
    """The plan of a new run (what --dry-run prints); creates nothing."""
    facts = facts or _facts(backend_name, name)
    run_id, run_dir = run_location(spec, facts, name)
    return get_backend(backend_name).plan(spec, facts, run_id=run_id, run_dir=run_dir, created=time.time())


def start(spec: Spec, backend_name: str, announce: Callable[[Plan], None] = lambda plan: None,
          name: Optional[RunName] = None) -> Launched:
    """Plan, check, create the run dir with plan.json, launch. A refused launch leaves no run dir."""
    backend = get_backend(backend_name)
    facts = _facts(backend_name, name)
    plan = plan_new(spec, backend_name, facts, name)
    backend.preflight(plan)
    plan = create_run(plan, spec, facts, lambda: plan_new(spec, backend_name, facts, name), fixed=name is not None)
    announce(plan)
    try:
        handle = backend.launch(plan, withheld(spec.env, spec.secret_env))
    except UserError:
        shutil.rmtree(plan.run_dir, ignore_errors=True)  # nothing started: no trace but the error
        raise
    return Launched(plan, handle, backend)


def create_run(plan: Plan, spec: Spec, facts: HostFacts, replan: Callable[[], Plan], fixed: bool = False) -> Plan:
    """Reserve the run dir and write the run's files; on any OSError (full disk, quota, read-only,
    permissions) remove everything this created and raise UserError naming the file and the cause."""
    base = os.path.dirname(plan.run_dir)
    check_runs_base(spec.logging.dir, base)
    created: list[str] = []
    reserved: Optional[str] = None
    try:
        created = make_dirs(base)
        plan = _reserve_named_run_dir(plan) if fixed else _reserve_run_dir(plan, replan)
        reserved = plan.run_dir
        materialize(plan, spec, facts)
        return plan
    except OSError as e:
        if reserved:
            shutil.rmtree(reserved, ignore_errors=True)
        for path in reversed(created):  # the base dirs this run created, deepest first, if still empty
            try:
                os.rmdir(path)
            except OSError:
                break
        raise UserError(*storage_error_text(e, spec.logging.dir, base)) from None


def check_runs_base(logging_dir: str, base: str) -> None:
    """logging.dir must be a directory or not exist yet: a dangling link or a file there would
    otherwise read as "no free run directory" or a traceback."""
    where = f"logging.dir {logging_dir!r}" + (f" ({base})" if logging_dir != base else "")
    hint = "point logging.dir (or HPCGPU_LOG_DIR) at a directory, or remove what is in the way"
    if os.path.islink(base) and not os.path.exists(base):
        raise UserError(f"{where} is a symbolic link to {os.readlink(base)!r}, which does not exist", hint=hint)
    if os.path.lexists(base) and not os.path.isdir(base):
        raise UserError(f"{where} is a file, not a directory", hint=hint)


def make_dirs(path: str) -> list[str]:
    """Create path and its missing parents (0700 for the new ones); return those created, outermost
    first, so a failed start can remove exactly them."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    created = []
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):  # a file or a dangling link where a directory must go
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", path) from None
            continue  # another run created it meanwhile
        created.append(path)
    return created


def storage_error_text(e: OSError, logging_dir: str, base: str) -> tuple[str, str]:
    """The message and hint for a run that could not be written: the file, the cause, the fix."""
    path = str(e.filename or "?")
    # on the way to or inside logging.dir (the base, one of its parents, a run dir file), else the index
    on_base = path == base or base.startswith(path.rstrip(os.sep) + os.sep) or path.startswith(base + os.sep)
    key = f"logging.dir {logging_dir!r}" if on_base else "the run index (HPCGPU_HOME)"
    message = f"cannot write the run ({key}): {path}: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free space (or quota) on that filesystem, or point logging.dir (HPCGPU_LOG_DIR) elsewhere"
    elif e.errno == errno.EFBIG:
        hint = "a file-size limit was hit (`ulimit -f`, or the filesystem's): raise it, or point logging.dir elsewhere"
    elif e.errno == errno.EROFS:
        hint = "that filesystem is read-only: point logging.dir (HPCGPU_LOG_DIR) at a writable directory"
    elif e.errno in (errno.EACCES, errno.EPERM):
        hint = "you may not write there: fix its permissions, or point logging.dir (HPCGPU_LOG_DIR) elsewhere"
    else:
        hint = "point logging.dir (HPCGPU_LOG_DIR) at a writable directory"
    if key.startswith("the run index"):
        hint = "set HPCGPU_HOME to a writable directory with free space"
    return message + "; nothing was started and no run directory was left", hint


def _reserve_run_dir(plan: Plan, replan: Callable[[], Plan], tries: int = 5) -> Plan:
    """The plan whose run dir this process created exclusively: two runs started in the same second
    may draw the same id, and must not share a directory (replan draws a fresh id). The base exists."""
    for _ in range(tries):
        try:
            Path(plan.run_dir).mkdir(mode=0o700)
            return plan
        except FileExistsError:
            plan = replan()
    raise UserError(f"could not find a free run directory next to {plan.run_dir}")


def _reserve_named_run_dir(plan: Plan) -> Plan:
    """The run dir of a run id the user chose (--rdzv-id): refused when a run already used it."""
    if (Path(plan.run_dir) / "run.json").exists():
        raise UserError(f"run {plan.run_id} already ran here ({plan.run_dir}): a run id names one run",
                        hint=f"give a new --rdzv-id on every node, or continue it: hpcgpu run local --resume {plan.run_id}")
    Path(plan.run_dir).mkdir(mode=0o700, exist_ok=True)
    return plan


def materialize(plan: Plan, spec: Spec, facts: HostFacts) -> None:
    """The run dir's subdirectories, plan.json, spec.yaml, and the run in the index."""
    run_dir = create_run_dir(str(Path(plan.run_dir).parent), Path(plan.run_dir).name)
    write_plan(plan)
    write_private_text(run_dir / "spec.yaml", dump_spec(spec))
    register(RunRecord(id=plan.run_id, run_dir=str(run_dir), backend=plan.backend, created=plan.created,
                       nodes=plan.nodes, pid=os.getpid(), pid_start=start_time(os.getpid())))
    # a resume runs where the run started: relative script and data paths, and the code
    # directory a container mounts, mean the same thing then
    update_record(run_dir, cwd=facts.cwd)


def write_plan(plan: Plan) -> None:
    """plan.json, private to the user, replaced atomically."""
    write_private_text(plan_path(plan.run_dir), plan.to_json())  # the very bytes --dry-run --json prints


# ---------------------------------------------------------------- resumed runs


def resume_plan(ref: str, backend_name: str, allow_restart: bool = False) -> tuple[RunRecord, Plan]:
    """The run to continue and its new plan: the spec it was started with, this machine's facts now,
    the same id and run dir. Changes into the directory the run was started from. Refuses (UserError)
    a run whose checkpoints are all broken unless allow_restart (see check_progress_kept)."""
    record = find_run(ref)
    if record.backend != backend_name:
        how = RESUME_COMMANDS.get(record.backend, "").format(id=record.id)
        raise UserError(f"run {record.id} ran on {record.backend}, not {backend_name}",
                        hint=f"continue it with: {how}" if how else None)
    spec, _ = load_spec(Path(record.run_dir) / "spec.yaml")
    _return_to_launch_dir(record.run_dir)
    facts = gather_facts(backend_name)
    plan = get_backend(backend_name).plan(spec, facts, run_id=record.id, run_dir=record.run_dir, created=time.time())
    note = check_progress_kept(record, plan, allow_restart)
    if note:  # on stderr: `--dry-run --json` prints nothing but the plan on stdout
        print(note, file=sys.stderr, flush=True)
    return record, plan


def check_progress_kept(record: RunRecord, plan: Plan, allow_restart: bool) -> Optional[str]:
    """Before a resume: the ranks would set every broken checkpoint aside and start from step 0, and a
    run that lost all its progress must not restart as if nothing happened. Refuses (UserError) when
    the run has checkpoints but none looks complete (manifest and file sizes: cheap, no torch; the
    ranks still check SHA-256), unless allow_restart. Returns a note for the user, or None."""
    if (plan.spec.get("checkpoint") or {}).get("resume", "auto") != "auto":
        return None  # `never` starts over by choice; a named checkpoint that is broken fails in the ranks
    if plan.request.get("node_rank", 0):
        return None  # another node than node 0 (run local --nnodes): rank 0, on node 0, decides for all
    ckpt_dir = Path(plan.ckpt_dir)
    problems = progress_lost(ckpt_dir)
    if problems is None:
        if list_checkpoints(ckpt_dir):
            return None
        # nothing was lost: the run stopped before its first save
        return f"hpcgpu: run {record.id} has no checkpoint in {ckpt_dir} yet: it starts again at step 0"
    details = "".join(f"\n  {line}" for line in problems)
    if allow_restart:
        return (f"hpcgpu: warning: every checkpoint of run {record.id} is corrupt or incomplete; starting it "
                f"over from step 0 ({ALLOW_RESTART_FLAG}):{details}")
    how = RESUME_COMMANDS.get(record.backend, "hpcgpu ... --resume {id}").format(id=record.id)
    raise UserError(
        f"every checkpoint of run {record.id} is corrupt or incomplete: resuming would start from step 0 "
        f"and all its progress would be lost; nothing was started. In {ckpt_dir}:{details}",
        hint=f"to start it over from step 0 anyway: {how} {ALLOW_RESTART_FLAG}")


def resume(ref: str, backend_name: str, announce: Callable[[Plan], None] = lambda plan: None,
           allow_restart: bool = False) -> Launched:
    """Continue a run in its own run dir: its ranks resume from the newest valid checkpoint there.
    Secret env values come from the environment (they were never written)."""
    record, plan = resume_plan(ref, backend_name, allow_restart)
    backend = get_backend(backend_name)
    backend.preflight(plan, resuming=record)
    undo = begin_resumed_attempt(record)
    write_plan(plan)
    announce(plan)
    try:
        handle = backend.launch(plan, {})
    except UserError:  # refused before anything started: the run is as it was
        undo()
        raise
    return Launched(plan, handle, backend)


def begin_resumed_attempt(record: RunRecord) -> Callable[[], None]:
    """Before a run's resumed attempt: its previous result.json kept under its own name (it would read
    as the new attempt's outcome), the resume counted in run.json with this launcher. Returns what
    puts the run back as it was, for a launch that is refused before anything started."""
    run_dir = Path(record.run_dir)
    before = read_json(run_dir / "run.json") or {}
    restarts = int(before.get("restarts") or 0)
    result = run_dir / RESULT_FILE
    kept = run_dir / (f"result-job{record.job_id}.json" if record.job_id else f"result-{restarts}.json")
    if result.exists():
        result.replace(kept)
    update_record(run_dir, pid=os.getpid(), pid_start=start_time(os.getpid()), restarts=restarts + 1)

    def undo() -> None:
        if not result.exists() and kept.exists():
            kept.replace(result)
        write_json_atomic(run_dir / "run.json", before)
    return undo


def _return_to_launch_dir(run_dir: str) -> None:
    """chdir to the directory the run was started from, when it is recorded and still there."""
    cwd = (read_json(Path(run_dir) / "run.json") or {}).get("cwd")
    if cwd and cwd != os.getcwd() and os.path.isdir(cwd):
        print(f"hpcgpu: resuming in {cwd}, where the run was started", flush=True)
        os.chdir(cwd)
