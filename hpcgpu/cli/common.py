"""What the run verbs share on the command line: the -f option, --gpus parsing, dry-run output."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import click

from hpcgpu.contract.errors import UserError

spec_option = click.option(
    "-f", "--file", "spec_file", type=click.Path(dir_okay=False), default=None,
    help="Job spec (default: ./hpcgpu.yaml if present, else the bundled demo).",
)

set_option = click.option(
    "--set", "set_items", multiple=True, metavar="KEY=VALUE",
    help="Set any spec key (dotted, repeatable), e.g. --set train.lr=3e-4 --set train.epochs=5; checked like "
         "the spec file. Precedence: spec file < HPCGPU_* variables < --set < the dedicated flags.")

console_option = click.option(
    "--console", type=click.Choice(["rank0", "all", "none"]), default=None,
    help="What the console shows of the ranks (logging.console; default rank0): rank 0's lines, every "
         "rank's prefixed [rank N], or none. All ranks always log to <run dir>/logs/rank<N>.log, and a "
         "failed rank's traceback always shows. Later: hpcgpu logs RUN --all / --dedup.")


def with_set_items(flags: dict, set_items: tuple[str, ...]) -> dict:
    """--set values under the dedicated flags given (a flag not given is None and leaves --set alone)."""
    from hpcgpu.host.spec import parse_set_options

    return {**parse_set_options(set_items), **{k: v for k, v in flags.items() if v is not None}}


dry_run_options = [
    click.option("--dry-run", is_flag=True, help="Print the plan (command, environment, rank table) and start nothing."),
    click.option("--json", "as_json", is_flag=True,
                 help="With --dry-run: print the plan as JSON, the very object written to <run dir>/plan.json."),
]


def with_dry_run_options(fn):
    for option in reversed(dry_run_options):
        fn = option(fn)
    return fn


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


def print_plan(plan, backend, source: str, as_json: bool) -> int:
    """The dry run: the plan as JSON (nothing else on stdout), or the backend's text."""
    if as_json:
        click.echo(plan.to_json(), nl=False)
        return 0
    click.echo(f"spec:     {source}")
    click.echo(backend.describe(plan), nl=False)
    return 0


def check_json_flag(as_json: bool, dry_run: bool) -> None:
    if as_json and not dry_run:
        raise UserError("--json prints the plan of a dry run", hint="add --dry-run (a real run writes <run dir>/plan.json)")


allow_restart_option = click.option(
    "--allow-restart-from-zero", "allow_restart", is_flag=True,
    help="With --resume: go on although every checkpoint of the run is corrupt or incomplete (the run "
         "starts over from step 0). Without it such a resume is refused (exit 2): its progress is lost.")

#: what --resume combines with: the run's own spec decides the rest
RESUME_COMPANIONS = frozenset({"resume_run", "dry_run", "as_json", "wait", "follow", "allow_restart"})


def check_allow_restart_flag(allow_restart: bool, resume_run: Optional[str]) -> None:
    if allow_restart and not resume_run:
        raise UserError("--allow-restart-from-zero goes with --resume RUN (a new run starts at step 0 anyway)",
                        hint="add --resume RUN, or drop --allow-restart-from-zero")


def refuse_options_with_resume() -> None:
    """--resume continues a run with the spec it was started with: name every other option given."""
    ctx = click.get_current_context()
    given = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name in RESUME_COMPANIONS or source is not click.core.ParameterSource.COMMANDLINE:
            continue
        given.append("-- CMD" if param.name == "command" else max(param.opts, key=len))
    if given:
        raise UserError(f"--resume continues a run with the spec it was started with; it takes no {', '.join(given)}",
                        hint="start a new run to change the job, or give --resume RUN alone")


def exit_after_agent(code: int) -> None:
    """Exit now, skipping interpreter teardown, once the in-process node agent is done and all is
    reported: torch's C++ threads (elastic, TCPStore) have been seen to abort during teardown
    ("terminate called without an active exception"), turning a clean status into 134."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
