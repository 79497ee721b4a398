"""A plain torch DDP script (no hpcgpu import): records when its process started, when its first line ran,
when the process group was up and when its first training step ended (wall-clock unix times).

Usage (under any launcher): first_step.py OUT_DIR  ->  OUT_DIR/rank<R>.json
"""

import time

SCRIPT_START = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def process_start() -> float:
    """This process's start time from /proc (clock-tick resolution), as a unix time."""
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return btime + ticks / os.sysconf("SC_CLK_TCK")


import torch.distributed as dist  # noqa: E402
from first_ddp_step import first_ddp_step  # noqa: E402
from clean_exit import exit_cleanly  # noqa: E402

out = sys.argv[1]
dist.init_process_group("gloo")
PG_UP = time.time()
t = first_ddp_step()
print(f"first step done at {t:.6f}", flush=True)
with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({"process_start": process_start(), "script_start": SCRIPT_START, "pg_up": PG_UP, "first_step": t}, f)
exit_cleanly()
