"""`python -m hpcgpu.backends.slurm.node_step PYXIS_ARGS... -- NODE_ARGV...`: a nested job step on this node.

Used for pyxis: NodeCommand stays on the host (scontrol for the requeue, the submitting Python),
and this helper replaces itself with `srun --overlap` on this node only, carrying the pyxis options,
so the node agent runs inside the image. The inner step renumbers SLURM_NODEID to 0, so the outer
value is passed in through `env`. No shell is involved: the node name comes from our environment.
"""

from __future__ import annotations

import os
import shlex
import sys


def nested_step_argv(pyxis_args: list[str], node_argv: list[str], environ: dict) -> list[str]:
    """The srun command line for this node's nested step."""
    return [
        "srun", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={environ['SLURMD_NODENAME']}",
        "--kill-on-bad-exit=1", *pyxis_args, "env", f"SLURM_NODEID={environ.get('SLURM_NODEID', '0')}", *node_argv,
    ]


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: python -m hpcgpu.backends.slurm.node_step PYXIS_ARGS... -- NODE_ARGV...")
    cut = argv.index("--")
    step = nested_step_argv(argv[:cut], argv[cut + 1:], dict(os.environ))
    print(f"hpcgpu: nested step on this node: {shlex.join(step)}", file=sys.stderr, flush=True)
    os.execvp(step[0], step)


if __name__ == "__main__":
    main(sys.argv[1:])
