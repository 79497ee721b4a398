"""Backends execute a Plan; they decide nothing. Looked up by name, imported only when used.

Each backend module exposes a class with:
    launch(plan) -> RunRecord-compatible handle (a job id or pid lives in run.json)
    status(record) -> str          e.g. RUNNING, PENDING, DONE, FAILED, STOPPED, UNKNOWN
    cancel(record) -> None
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "local": "hpcgpu.backends.local.backend:LocalBackend",
    "slurm": "hpcgpu.backends.slurm.backend:SlurmBackend",
}


def get_backend(name: str):
    """Instantiate the backend registered under name."""
    if name not in REGISTRY:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(REGISTRY)}")
    module, attr = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)()
