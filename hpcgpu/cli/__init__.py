"""The hpcgpu command line. One module per verb; each is imported only when that verb runs,
so `hpcgpu --help` costs little more than Python itself (torch is never imported here)."""

from __future__ import annotations

import importlib
import sys

import click

from hpcgpu import __version__
from hpcgpu.contract import exitcodes
from hpcgpu.contract.errors import UserError

# verb -> (module, attribute, one-line help shown by `hpcgpu --help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("hpcgpu.cli.init_cmd", "init", "Write a starter hpcgpu.yaml after a few questions."),
    "run": ("hpcgpu.cli.run_cmd", "run", "Run a job on this machine (run local)."),
    "submit": ("hpcgpu.cli.submit_cmd", "submit", "Submit a job to a scheduler (submit slurm)."),
    "train": ("hpcgpu.cli.train_cmd", "train", "Node agent: start this node's ranks (used inside jobs and containers)."),
    "status": ("hpcgpu.cli.jobs_cmd", "status", "Show recent runs, or one run's state."),
    "logs": ("hpcgpu.cli.jobs_cmd", "logs", "Print or follow a run's per-rank logs."),
    "cancel": ("hpcgpu.cli.jobs_cmd", "cancel", "Cancel a running local run or Slurm job."),
    "doctor": ("hpcgpu.cli.doctor_cmd", "doctor", "Check this machine for what breaks multi-GPU training."),
    "spec": ("hpcgpu.cli.spec_cmd", "spec", "Validate, show or export the schema of a job spec."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table above so listing verbs imports nothing.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpcgpu")
def cli() -> None:
    """One YAML spec -> a local torchrun launch or a Slurm job, with the same worker everywhere.

    \b
    Quick start:
      hpcgpu run local --nproc 2        # the bundled demo on 2 CPU ranks
      hpcgpu run local --gpus all       # ... on every GPU of this machine
      hpcgpu init                       # write a starter hpcgpu.yaml
      hpcgpu submit slurm --nodes 2 --gpus-per-node 8 --dry-run
      hpcgpu doctor                     # what will break, before it does
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning UserError into a clear message and exit status 2."""
    try:
        rv = cli.main(args=argv, standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(exitcodes.USAGE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(exitcodes.USAGE if e.exit_code == 2 else e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
