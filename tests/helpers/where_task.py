"""The bundled demo task, plus a record of where each rank ran: inside the image or on the host.

The container tests copy this file into the code directory they mount (it is imported there as
`where_task`, through the worker's working directory), so it runs with the image's Python and the
image's hpcgpu. Each rank appends one JSON line per attempt to <run dir>/where.jsonl.
"""

import json
import os
import sys

import hpcgpu
from hpcgpu.examples.mlp import make_task as demo_task


def make_task(**kwargs):
    """`entry.task: where_task:make_task`; kwargs go to the demo task."""
    record = {
        "rank": int(os.environ["RANK"]),
        "executable": sys.executable,
        "hpcgpu": os.path.dirname(hpcgpu.__file__),
        "containerenv": os.path.exists("/run/.containerenv"),  # podman writes it into every container
        "dockerenv": os.path.exists("/.dockerenv"),  # docker does (and some hosts have it too)
        "node": os.environ.get("SLURMD_NODENAME"),
        "restart": int(os.environ.get("HPCGPU_RESTART_COUNT") or 0),
    }
    with open(os.path.join(os.environ["HPCGPU_RUN_DIR"], "where.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    return demo_task(**kwargs)
