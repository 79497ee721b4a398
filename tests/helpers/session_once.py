"""A value computed once per test session, whichever pytest-xdist worker asks first.

Module-scoped fixtures run once per worker: two modules on two workers that need the same reference
(e.g. the plain runs a sweep is compared with) would each train it. Here the first asker computes it
under a file lock in the session's shared temporary root; the others wait on the lock and read its
JSON. A failure writes nothing, so the next asker computes (and fails) on its own.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any, Callable

import pytest


def session_once(tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[], Any]) -> Any:
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is popen-gwN under the session's root
        root = root.parent
    result = root / f"session-once-{name}.json"
    with open(root / f"session-once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if result.exists():
            return json.loads(result.read_text())
        value = compute()
        result.write_text(json.dumps(value))
        return value
