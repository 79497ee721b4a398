"""A 2-rank gloo job that trains forever (small all-reduces) after writing each rank's pid to OUT_DIR/pid<R>.
The benchmark SIGKILLs one rank and times how long the launcher takes to exit non-zero."""

import os
import sys
import time

import torch
import torch.distributed as dist

out = sys.argv[1]
dist.init_process_group("gloo")
t = torch.ones(1024)
dist.all_reduce(t)
tmp = os.path.join(out, f".pid{os.environ['RANK']}")
with open(tmp, "w") as f:
    f.write(str(os.getpid()))
os.replace(tmp, os.path.join(out, f"pid{os.environ['RANK']}"))
while True:
    dist.all_reduce(t)
    time.sleep(0.005)
