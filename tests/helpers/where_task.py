"""The bundled demo task, plus a record of where each rank ran: inside the image or on the host.

The container tests copy this file into the code directory they mount (it is imported there as
`where_task`, through the worker's working directory), so it runs with the image's Python and the
image's hpcgpu. Each rank appends one JSON line per attempt to <run dir>/where.jsonl.
"""

import dataclasses
import json
import os
import sys
import time

import hpcgpu
from hpcgpu.examples.mlp import make_task as demo_task


class _Held:
    """The dataset, except that once `after` samples were read each read waits while the file
    `hold` exists: a test holds the run mid-epoch, however fast the machine is."""

    def __init__(self, dataset, after: int, hold: str):
        self.dataset, self.after, self.reads, self.hold = dataset, after, 0, hold

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        while self.reads > self.after and os.path.exists(self.hold):
            time.sleep(0.05)
        return self.dataset[i]


def make_task(hold_after: int = 0, hold_file: str = "", **kwargs):
    """`entry.task: where_task:make_task`; kwargs go to the demo task. hold_after > 0: each rank's
    reads past that many samples wait while hold_file exists (the test creates and removes it)."""
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
    task = demo_task(**kwargs)
    return dataclasses.replace(task, dataset=_Held(task.dataset, hold_after, hold_file)) if hold_after else task
