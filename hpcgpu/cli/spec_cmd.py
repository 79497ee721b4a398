"""`hpcgpu spec validate|show|schema`."""

from __future__ import annotations

import click

from hpcgpu.cli.common import spec_option


@click.group()
def spec() -> None:
    """Check a job spec, show it resolved, or export its JSON Schema."""


@spec.command()
@spec_option
def validate(spec_file) -> int:
    """Exit 0 if the spec is valid; otherwise list every problem with its key path and line."""
    from hpcgpu.host.spec import load_spec

    _, source = load_spec(spec_file)
    click.echo(f"{source}: ok")
    return 0


@spec.command()
@spec_option
def show(spec_file) -> int:
    """Print the spec with every default filled in (HPCGPU_* environment overrides applied)."""
    import os

    from hpcgpu.host.spec import apply_overrides, dump_spec, env_overrides, load_spec

    loaded, _ = load_spec(spec_file)
    click.echo(dump_spec(apply_overrides(loaded, env_overrides(dict(os.environ)))), nl=False)
    return 0


@spec.command()
def schema() -> int:
    """Print the JSON Schema (point yaml-language-server at it for completion in editors)."""
    from hpcgpu.host.spec import spec_schema

    click.echo(spec_schema())
    return 0
