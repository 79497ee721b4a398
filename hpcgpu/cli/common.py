"""What `run local` and `submit slurm` share: loading the spec with overrides, entry from `-- CMD`."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click

from hpcgpu.contract.errors import UserError
from hpcgpu.host.plan import Plan, describe_plan
from hpcgpu.host.runs import RunRecord, create_run_dir, new_run_id, register
from hpcgpu.host.spec import Spec, apply_overrides, dump_spec, env_overrides, load_spec

spec_option = click.option(
    "-f", "--file", "spec_file", type=click.Path(dir_okay=False), default=None,
    help="Job spec (default: ./hpcgpu.yaml if present, else the bundled demo).",
)


def parse_gpus(value: Optional[str]) -> Any:
    """--gpus N|all -> int or 'all'."""
    if value is None or value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--gpus must be a number or 'all', got {value!r}") from None
    if n < 0:
        raise UserError(f"--gpus must be >= 0, got {n}")
    return n


def entry_from_command(cmd: tuple[str, ...]) -> dict[str, Any]:
    """`-- train.py --lr 3` -> a script entry; `-- -m pkg.mod args` -> a module entry."""
    if cmd[0] == "-m":
        if len(cmd) < 2:
            raise UserError("`-- -m` needs a module name, e.g. `-- -m mypkg.train`")
        return {"module": cmd[1], "args": list(cmd[2:])}
    if cmd[0] in ("python", "python3", sys.executable):
        return entry_from_command(cmd[1:]) if len(cmd) > 1 else entry_from_command(("",))
    return {"script": cmd[0], "args": list(cmd[1:])}


def load_with_overrides(spec_file: Optional[str], flags: dict[str, Any], cmd: tuple[str, ...] = ()) -> tuple[Spec, str]:
    """spec < HPCGPU_* environment < flags; `-- CMD` replaces the spec's entry."""
    spec, source = load_spec(spec_file)
    spec = apply_overrides(spec, env_overrides(dict(os.environ)))
    overrides = dict(flags)
    if cmd:
        e = entry_from_command(cmd)
        overrides.update({"entry.script": None, "entry.module": None, "entry.task": None, "entry.args": []})
        overrides.update({f"entry.{k}": v for k, v in e.items()})
        spec = _clear_entry(spec)
    if cmd and source == "<bundled demo>" and not flags.get("name"):
        # no spec file: name the run after the script or module, not "demo"
        stem = Path(overrides.get("entry.script") or overrides.get("entry.module") or "job").stem
        overrides["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", stem).strip("-._")[:40] or "job"
    spec = apply_overrides(spec, overrides)
    check_entry_exists(spec)
    return spec, source


def _clear_entry(spec: Spec) -> Spec:
    data = spec.model_dump(mode="json")
    data["entry"] = {"script": "_"}  # replaced right after by the -- CMD overrides
    return Spec.model_validate(data)


def check_entry_exists(spec: Spec) -> None:
    """A missing script is bad input: say so before anything starts."""
    if spec.entry.script and not Path(spec.entry.script).is_file():
        raise UserError(
            f"entry.script {spec.entry.script!r} not found (looked in {os.getcwd()})",
            hint="give the path relative to the directory you run hpcgpu from",
        )


def run_location(spec: Spec) -> tuple[str, str]:
    """A fresh run id and the absolute run dir it will get (nothing is created yet)."""
    run_id = new_run_id(spec.name)
    return run_id, str(Path(spec.logging.dir).absolute() / run_id)


def reserve_run_dir(make_plan: Callable[[], Plan], tries: int = 5) -> Plan:
    """A plan whose run dir this process created exclusively: two runs started in the same second
    may draw the same id, and must not share a directory. make_plan draws a fresh id each call."""
    for _ in range(tries):
        plan = make_plan()
        try:
            Path(plan.run_dir).parent.mkdir(parents=True, exist_ok=True)
            Path(plan.run_dir).mkdir(mode=0o700)
            return plan
        except FileExistsError:
            continue
    raise RuntimeError(f"could not find a free run directory next to {plan.run_dir}")


def materialize_run(plan: Plan, nodes: int) -> Path:
    """Create the run dir, write the resolved spec and plan, and register the run in the index."""
    run_dir = create_run_dir(str(Path(plan.run_dir).parent), plan.run_id)
    (run_dir / "spec.yaml").write_text(dump_spec(plan.spec))
    (run_dir / "plan.txt").write_text(describe_plan(plan))
    register(RunRecord(id=plan.run_id, run_dir=str(run_dir), backend=plan.backend, created=time.time(), nodes=nodes, pid=os.getpid()))
    return run_dir


def remember_launch_dir(run_dir: str) -> None:
    """Record where the run was started: a resume runs there again (relative script and data
    paths, and the code directory a container mounts, mean the same thing then)."""
    from hpcgpu.host.runs import update_record

    update_record(Path(run_dir), cwd=os.getcwd())


def return_to_launch_dir(run_dir: str) -> None:
    """chdir to the directory the run was started from, when it is recorded and still there."""
    from hpcgpu.host.runs import read_json

    cwd = (read_json(Path(run_dir) / "run.json") or {}).get("cwd")
    if cwd and cwd != os.getcwd() and os.path.isdir(cwd):
        click.echo(f"hpcgpu: resuming in {cwd}, where the run was started")
        os.chdir(cwd)


def exit_after_agent(code: int) -> None:
    """Exit now, skipping interpreter teardown, once the in-process node agent is done and all is
    reported: torch's C++ threads (elastic, TCPStore) have been seen to abort during teardown
    ("terminate called without an active exception"), turning a clean status into 134."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
