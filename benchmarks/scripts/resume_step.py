"""A hand-written loop on `hpcgpu.dist`, to its first step: fresh, or resumed from a big checkpoint.

Usage (under `hpcgpu run local`): resume_step.py OUT_DIR MIB [save]
  save: fill MIB MiB of "model" tensors and save them with dist.save_checkpoint (prepares tier 10).
  otherwise: allocate the same tensors; if there is a resume point (the spec's checkpoint.dir),
  load it with dist.load_checkpoint (memory-mapped) and copy it in, as load_state_dict would; if
  not, zero them (a fresh start touches its memory too). Then one DDP step of a small model, and
  OUT_DIR/rank<R>.json gets the wall-clock times.

By the time this script runs, the worker has already verified the checkpoint (rank 0 hashes it
once for the job: hpcgpu/worker/context.py), so the whole resume path lies between launch and first step.
"""

import time

SCRIPT_START = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from first_ddp_step import first_ddp_step  # noqa: E402

from hpcgpu import dist  # noqa: E402

TENSORS = 16

out, mib = sys.argv[1], int(sys.argv[2])
save = sys.argv[3:] == ["save"]
info = dist.init()
PG_UP = time.time()
n = max(mib * 2**20 // 4 // TENSORS, 1)
big = [torch.empty(n) for _ in range(TENSORS)]
if save:
    gen = torch.Generator().manual_seed(0)
    for t in big:
        t.normal_(generator=gen)  # random bytes: nothing below may shortcut zeros
    dist.save_checkpoint({"big": {f"w{i}": t for i, t in enumerate(big)}}, 1)
    dist.wait_for_checkpoint()
    sys.exit(0)

state = dist.load_checkpoint()
if state is None:
    for t in big:
        t.zero_()
else:
    for t, (_, src) in zip(big, sorted(state["big"].items(), key=lambda kv: int(kv[0][1:]))):
        t.copy_(src)  # reads the mapped file: from the page cache, or from disk for the first rank
LOADED = time.time()

t = first_ddp_step()
with open(os.path.join(out, f"rank{info.rank}.json"), "w") as f:
    json.dump({"script_start": SCRIPT_START, "pg_up": PG_UP, "loaded": LOADED, "first_step": t,
               "resumed": state is not None}, f)
