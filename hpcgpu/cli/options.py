"""Click options shared by several verbs. Imports nothing heavy: `run local` must be able to start
its node agent before the spec machinery (pydantic) is imported."""

from __future__ import annotations

import click

spec_option = click.option(
    "-f", "--file", "spec_file", type=click.Path(dir_okay=False), default=None,
    help="Job spec (default: ./hpcgpu.yaml if present, else the bundled demo).",
)
