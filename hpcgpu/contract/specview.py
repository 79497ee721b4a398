"""The resolved spec as node agents and ranks read it: plain data behind attribute access.

The host validated the spec (hpcgpu.host.spec) and put it, every default filled in, into plan.json
(and spec.yaml, for people); agents and ranks only read it. Importing pydantic and building the
models cost each rank about 0.2 s of CPU at start-up, which on a busy node delayed the first step
(benchmarks/PROFILING.md). Standard library only.
"""

from __future__ import annotations

import copy
from typing import Any

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
            return entry_kind(data["script"], data["module"])
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


def entry_kind(script: Any, module: Any) -> str:
    """What an entry runs: `script`, `module` or `task` (exactly one is set; validated on the host)."""
    return "script" if script else "module" if module else "task"


#: the first line of a spec hpcgpu resolved (hpcgpu.host.spec.dump_spec writes it)
RESOLVED_HEADER = "# hpcgpu resolved spec: validated, every default filled in\n"
