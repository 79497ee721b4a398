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


def exit_after_agent(code: int) -> None:
    """Exit now, skipping interpreter teardown, once the in-process node agent is done and all is
    reported: torch's C++ threads (elastic, TCPStore) have been seen to abort during teardown
    ("terminate called without an active exception"), turning a clean status into 134."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
