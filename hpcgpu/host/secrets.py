"""Secret-looking variables: their values never reach files, scripts, consoles or logs.

A spec's `env:` may hold a token (WANDB_API_KEY: ...). Files get REDACTED in its place; the value
travels as an explicit `withheld` mapping from run creation to the backend, which puts it in the
environment of what it starts (never a module global, never argv). Torch-free, pydantic-free.
"""

from __future__ import annotations

from typing import Mapping

from hpcgpu.contract.plan import REDACTED

# Words that mark a credential when they are a whole part of a name (parts are split at '_'):
# HF_TOKEN, WANDB_API_KEY, DB_PASSWORD, but not TOKENIZERS_PARALLELISM, KEYBOARD or AUTHOR, whose
# values users set and must see (a substring match made them "secrets" that resumes refused).
_SECRET_WORDS = frozenset({"TOKEN", "TOKENS", "KEY", "KEYS", "APIKEY", "SECRET", "SECRETS", "PASSWORD",
                           "PASSWORDS", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "AUTH"})


def is_secret(name: str) -> bool:
    """True when a part of a variable's name (split at '_') is a credential word, in any case."""
    return any(part in _SECRET_WORDS for part in name.upper().split("_"))


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """Copy of env with the values of secret-looking variables replaced by REDACTED."""
    return {k: (REDACTED if is_secret(k) else v) for k, v in env.items()}


def withheld(env: Mapping[str, str]) -> dict[str, str]:
    """The secret values in env (name -> value) that files will show as REDACTED."""
    return {k: v for k, v in env.items() if is_secret(k) and v != REDACTED}
