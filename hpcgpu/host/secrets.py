"""Secret variables: their values never reach files, scripts, consoles or reports.

The one owner of the fact "this variable is a secret". A variable is secret when
- its name has a credential word as a whole part (HF_TOKEN, WANDB_API_KEY), or
- its value carries credentials in a URL (postgres://user:pw@host, https://token@host), or
- the user marked its name secret (the spec's `secret_env:`, or HPCGPU_SECRET_ENV=NAME,NAME).

A spec's `env:` may hold such a value. Files get REDACTED in its place (the whole value: a plan
value of REDACTED is what tells a node agent "take this from the environment", so a resume needs
no other marker); the value travels as an explicit `withheld` mapping from run creation to the
backend, which puts it in the environment of what it starts (never a module global, never argv).
Torch-free, pydantic-free.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Mapping

from hpcgpu.contract.plan import REDACTED

#: the variable that marks more names secret, comma-separated (added to the spec's secret_env)
SECRET_ENV_VARIABLE = "HPCGPU_SECRET_ENV"

# Words that mark a credential when they are a whole part of a name (parts are split at '_'):
# HF_TOKEN, WANDB_API_KEY, DB_PASSWORD, but not TOKENIZERS_PARALLELISM, KEYBOARD or AUTHOR, whose
# values users set and must see (a substring match made them "secrets" that resumes refused).
_SECRET_WORDS = frozenset({"TOKEN", "TOKENS", "KEY", "KEYS", "APIKEY", "SECRET", "SECRETS", "PASSWORD",
                           "PASSWORDS", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "AUTH"})

# scheme://USERINFO@ : a URL whose authority (before any '/', '?' or '#') holds a user part.
# Any user part counts, with or without ':password': https://ghp_...@github.com carries a token in
# exactly that place, and a token cannot be told from a user name. tcp://host:port (no '@'),
# user@host and git@host:repo (no scheme), mailto:a@b (no '//') and https://host/@x ('@' in the
# path) are not credentials. Searched anywhere in the value: lists of URLs and DSNs embed them.
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#@\s]+@")

#: secret values shorter than this are redacted where shown as their variable, but not searched
#: for in other text: scrubbing "1" or "true" everywhere would garble a report, and hide nothing
MIN_SCRUBBED_LENGTH = 8


def is_secret_name(name: str) -> bool:
    """True when a part of a variable's name (split at '_') is a credential word, in any case."""
    return any(part in _SECRET_WORDS for part in name.upper().split("_"))


def has_url_credentials(value: str) -> bool:
    """True when value holds a URL with a user part (scheme://user[:password]@host)."""
    return bool(_URL_CREDENTIALS.search(value))


def is_secret(name: str, value: str = "", marked: Collection[str] = ()) -> bool:
    """The rule: a secret name, URL credentials in the value, or a name the user marked secret
    (marks match in any case, like names: a mark that misses by case would leak).
    HPCGPU_SECRET_ENV itself holds names, not a secret: redacting it would hide what was redacted."""
    if name == SECRET_ENV_VARIABLE:
        return False
    return (is_secret_name(name) or has_url_credentials(value)
            or name.upper() in {m.upper() for m in marked})


def redact(env: Mapping[str, str], marked: Collection[str] = ()) -> dict[str, str]:
    """Copy of env with the values of secret variables replaced by REDACTED."""
    return {k: (REDACTED if is_secret(k, v, marked) else v) for k, v in env.items()}


def withheld(env: Mapping[str, str], marked: Collection[str] = ()) -> dict[str, str]:
    """The secret values in env (name -> value) that files will show as REDACTED."""
    return {k: v for k, v in env.items() if is_secret(k, v, marked) and v != REDACTED}


def shown(name: str, value: str, marked: Collection[str] = ()) -> str:
    """value as it may be printed: REDACTED when the variable is secret."""
    return REDACTED if is_secret(name, value, marked) else value


def marked_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The names HPCGPU_SECRET_ENV marks secret ('A, B' -> ('A', 'B')); not validated here."""
    return tuple(n.strip() for n in environ.get(SECRET_ENV_VARIABLE, "").split(",") if n.strip())


def scrub(data: Any, environ: Mapping[str, str], marked: Collection[str] = ()) -> Any:
    """data (text, or lists and dicts of it) with every secret value of environ replaced by
    REDACTED: for reports built from many sources (the doctor's), where a value may turn up in a
    message or a tool's output rather than as its variable."""
    values = sorted({v for k, v in environ.items() if len(v) >= MIN_SCRUBBED_LENGTH and is_secret(k, v, marked)},
                    key=len, reverse=True)  # longest first: a secret that contains another goes whole
    return _scrub(data, values) if values else data


def _scrub(data: Any, values: list[str]) -> Any:
    if isinstance(data, str):
        for v in values:
            data = data.replace(v, REDACTED)
        return data
    if isinstance(data, dict):
        return {_scrub(k, values): _scrub(v, values) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_scrub(v, values) for v in data)
    return data
