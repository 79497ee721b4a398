"""Names of the HPCGPU_* variables that carry the plan from the host to nodes and ranks.

Torch-free: the host, the node agent and the worker all import it.
"""

#: run directory (holds plan.json, spec.yaml, logs/, checkpoints/, tb/, exit/)
RUN_DIR = "HPCGPU_RUN_DIR"
#: the plan every node and rank executes (plan.json)
PLAN_FILE = "HPCGPU_PLAN_FILE"
#: the resolved spec, for people and user scripts (ranks read the copy inside plan.json)
SPEC_FILE = "HPCGPU_SPEC_FILE"
#: checkpoint directory (absolute)
CKPT_DIR = "HPCGPU_CKPT_DIR"
#: this rank's planned device: cpu or cuda:N (what hpcgpu.dist.device() returns)
DEVICE = "HPCGPU_DEVICE"
#: checkpoint to resume from ("" on a fresh start); set per attempt by the node agent
RESUME_FROM = "HPCGPU_RESUME_FROM"
#: how many times this run was restarted (scheduler requeues + torch elastic restarts)
RESTART_COUNT = "HPCGPU_RESTART_COUNT"
#: scheduler restarts of the job (requeues), set for the node agent by the backend's node half
JOB_RESTARTS = "HPCGPU_JOB_RESTARTS"
#: "1" when the console the agent prints rank 0 to is a terminal (live progress bar)
CONSOLE_TTY = "HPCGPU_CONSOLE_TTY"
#: "agent" when the node agent reads the rank's fd 1 and 2 (pipes) into its log: the rank leaves them be
RANK_OUTPUT = "HPCGPU_RANK_OUTPUT"
#: base directory for the run index (default ~/.local/state/hpcgpu)
HOME = "HPCGPU_HOME"
#: "1" in the hpcgpu image (containers/Dockerfile), whose entrypoint is `hpcgpu`: a run that
#: `docker run IMAGE train` stopped continues in a new container of the image (see cli.run_cmd)
IN_IMAGE = "HPCGPU_IN_IMAGE"
#: host:port where the node agents of a multi-node run meet (published by the head node)
RDZV_ENDPOINT = "HPCGPU_RDZV_ENDPOINT"
#: this node's index in a multi-node run started without a scheduler
NODE_RANK = "HPCGPU_NODE_RANK"
#: several nodes: the address and interface this node's ranks use, and why (set by the node agent)
NETWORK = "HPCGPU_NETWORK"
#: the node agent's heartbeat file (contract/heartbeat.py): ranks report progress there; unset when
#: the watchdog is off or the rank was started by something else (plain torchrun)
HEARTBEAT_FILE = "HPCGPU_HEARTBEAT_FILE"
#: set only for the node agent's preloaded process (agent/zygote.py): its end of the socket to the agent
ZYGOTE_FD = "HPCGPU_ZYGOTE_FD"
#: "0" turns off starting ranks from the preloaded process: each rank is a fresh interpreter, as under torchrun
FORK_RANKS = "HPCGPU_FORK_RANKS"
