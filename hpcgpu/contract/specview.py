"""The resolved spec as ranks read it: plain data behind attribute access, without pydantic.

The host validated the spec (hpcgpu.host.spec) and wrote it to `<run dir>/spec.yaml` with every default
filled in; ranks only read it. Importing pydantic and building the models cost each rank about
0.2 s of CPU at start-up, which on a busy node delayed the first step (benchmarks/PROFILING.md).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# keys whose values are free-form mappings: returned as dicts, not as views
_MAPPINGS = frozenset({"env", "task_args", "extra"})


class SpecView:
    """Read-only attribute view of a validated spec dict (`view.train.lr`, `view.entry.kind`)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]):
        object.__setattr__(self, "_data", data)

    def __getattr__(self, name: str) -> Any:
        data = object.__getattribute__(self, "_data")
        if name == "kind" and "task" in data and "script" in data:  # Entry.kind
            return "script" if data["script"] else "module" if data["module"] else "task"
        try:
            value = data[name]
        except KeyError:
            raise AttributeError(name) from None
        return SpecView(value) if isinstance(value, dict) and name not in _MAPPINGS else value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the resolved spec is read-only")

    def model_dump(self, mode: str = "json") -> dict[str, Any]:
        """The data, as pydantic's model_dump(mode='json') of the same spec would give it."""
        return copy.deepcopy(object.__getattribute__(self, "_data"))


# the first line hpcgpu.host.spec.dump_spec writes (kept here too: importing hpcgpu.host.spec imports pydantic)
RESOLVED_HEADER = "# hpcgpu resolved spec: validated, every default filled in\n"


def load_resolved(path: str | Path) -> SpecView:
    """Read a spec file: as plain data when hpcgpu resolved it, else validated through hpcgpu.host.spec."""
    text = Path(path).read_text(encoding="utf-8")
    if text.startswith(RESOLVED_HEADER):
        return SpecView(yaml.safe_load(text) or {})
    from hpcgpu.host.spec import parse_spec  # a hand-written spec: validate it and fill in the defaults

    return SpecView(parse_spec(text, str(path)).model_dump(mode="json"))
