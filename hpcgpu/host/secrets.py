"""Secret-looking variables: their values never reach files, scripts, consoles or logs.

A spec's `env:` may hold a token (WANDB_API_KEY: ...). Files get REDACTED in its place; the value
travels as an explicit `withheld` mapping from run creation to the backend, which puts it in the
environment of what it starts (never a module global, never argv). Torch-free, pydantic-free.
"""

from __future__ import annotations

import re
from typing import Mapping

from hpcgpu.contract.plan import REDACTED

# Names that look like credentials: their values never reach the console, scripts or run dirs.
_SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """True when a variable's name looks like it holds a credential."""
    return bool(_SECRET_NAME.search(name))


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """Copy of env with the values of secret-looking variables replaced by REDACTED."""
    return {k: (REDACTED if is_secret(k) else v) for k, v in env.items()}


def withheld(env: Mapping[str, str]) -> dict[str, str]:
    """The secret values in env (name -> value) that files will show as REDACTED."""
    return {k: v for k, v in env.items() if is_secret(k) and v != REDACTED}
