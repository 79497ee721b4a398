"""`python -m hpcgpu.agent_child`: the node agent of a `run local`, started before the run exists.

`run local` starts this process first thing, so that importing torch (over a second on a small
machine) overlaps with the launcher validating the spec and preparing the run directory, instead
of following it. It waits on stdin for one JSON line: {"run_dir": ..., "env": {secret values}}.
Secret-looking values are never written to the run directory, so they travel over this pipe. EOF
without a line (the spec was bad, the run never started) means exit 0 at once, having done nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hpcgpu import exitcodes
from hpcgpu.procs import die_with_parent


def main() -> None:
    # If the launcher dies (kill -9), so does this agent, and its ranks die with it (they do the same).
    die_with_parent(exitcodes.FAILED)
    from hpcgpu import agent  # torch-free and pydantic-free: the run's spec.yaml is read as plain data

    agent.preload()
    line = sys.stdin.readline()
    if not line.strip():
        os._exit(exitcodes.OK)
    order = json.loads(line)
    os.environ.update(order.get("env", {}))
    code = agent.run_node(Path(order["run_dir"]))
    # os._exit, as hpcgpu.cli.common.exit_after_agent does: torch's threads can abort a normal teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
