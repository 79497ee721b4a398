"""Plans for tests: hand-made host facts, and the plan each backend builds from them (pure)."""

from __future__ import annotations

from typing import Any, Union

from hpcgpu.backends import get_backend
from hpcgpu.contract.plan import Plan
from hpcgpu.host.facts import HostFacts
from hpcgpu.host.spec import Spec, parse_spec

#: two partitions as `sinfo -h -o SINFO_FORMAT` prints them: gpu (default, 4 nodes of 8 GPUs), cpu
SINFO_ROWS = ("gpu*|4|gpu:h100:8(S:0-1)|64|512000|1:00:00|2-00:00:00",
              "cpu|2|(null)|32|128000|n/a|infinite")


def facts(**over: Any) -> HostFacts:
    """A login node or workstation at /home/ada/proj, uid 1000, no GPUs, an empty environment."""
    base: dict[str, Any] = dict(cwd="/home/ada/proj", uid=1000, gid=1000, python="/opt/venv/bin/python",
                                visible_gpus=0, infiniband=False, environ={}, partitions=())
    base.update(over)
    return HostFacts(**base)


def plan_for(spec: Union[str, Spec] = "", backend: str = "local", run_id: str = "demo-1",
             run_dir: str = "/home/ada/proj/runs/demo-1", **facts_over: Any) -> Plan:
    """The plan the backend builds for spec (YAML text or a Spec) with facts(**facts_over)."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    return get_backend(backend).plan(spec, facts(**facts_over), run_id=run_id, run_dir=run_dir)
