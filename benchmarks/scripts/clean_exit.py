"""How every benchmark script ends: destroy the process group, flush, and leave with os._exit.

torch 2.13's CPU build sometimes aborts a finished gloo process while the interpreter tears down
("terminate called without an active exception", SIGABRT) and torchrun then reports a run that did
all its work as failed. hpcgpu's own worker ends the same way for the same reason
(hpcgpu/worker/__main__.py); a reference script that crashed on exit would fail the suite, not measure it.
"""

import os
import sys

import torch.distributed as dist


def exit_cleanly(code: int = 0) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
