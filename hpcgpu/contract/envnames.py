"""Names of the HPCGPU_* variables that carry the plan from the host to nodes and ranks.

Torch-free: the front, the node agent and the worker all import it.
"""

#: run directory (holds spec.yaml, logs/, checkpoints/, tb/, exit/)
RUN_DIR = "HPCGPU_RUN_DIR"
#: the resolved spec file the ranks read (never CLI flags)
SPEC_FILE = "HPCGPU_SPEC_FILE"
#: checkpoint directory
CKPT_DIR = "HPCGPU_CKPT_DIR"
#: checkpoint to resume from ("" on a fresh start); set per attempt by the node agent
RESUME_FROM = "HPCGPU_RESUME_FROM"
#: how many times this run was restarted (torch elastic restarts + Slurm requeues)
RESTART_COUNT = "HPCGPU_RESTART_COUNT"
#: "1" when the console the agent prints rank 0 to is a terminal (live progress bar)
CONSOLE_TTY = "HPCGPU_CONSOLE_TTY"
#: base directory for the run index (default ~/.local/state/hpcgpu)
HOME = "HPCGPU_HOME"
#: host:port where the node agents of a multi-node run meet (published by the head node)
RDZV_ENDPOINT = "HPCGPU_RDZV_ENDPOINT"
