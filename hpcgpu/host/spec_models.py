"""The job spec's pydantic v2 models: every key, its type, default, bounds and docstring.

Loading, overrides and the JSON schema are in hpcgpu.host.spec (which re-exports these).
Torch-free (the CLI imports this).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hpcgpu.contract.specview import entry_kind
from hpcgpu.contract.text import has_control_chars

DEFAULT_SPEC_FILE = "hpcgpu.yaml"
DEMO_TASK = "hpcgpu.examples.mlp:make_task"


def _single_line(value: Any) -> Any:
    """Refuse control characters: in an sbatch script a newline would end the #SBATCH line and
    the rest would run as a shell command."""
    if has_control_chars(value):
        raise ValueError(f"{value!r} contains a newline or another control character; give a single-line value")
    return value


#: Upper bounds of the numeric keys. Every number reaches a C-level call (a timedelta, a C int, a torch
#: generator, sbatch): an unbounded one, e.g. `timeout_s: 1e20`, is accepted here and crashes the ranks
#: later with OverflowError. Each bound is far above any real use and far below any overflow.
#: waits (collective and rendezvous timeouts, the stop grace): a week; timedelta overflows near 1e14 s
MAX_WAIT_S = 7 * 24 * 3600
#: step counts (epochs, max_steps, every N steps): a billion
MAX_STEPS = 10**9
#: train.seed: 32 bits either way, numpy's seed range; the loader seeds torch with seed * 1000003 (< 2**63)
MAX_SEED = 2**32 - 1
#: Slurm's `--signal=B:USR2@N` takes N up to 65535 s
MAX_SIGNAL_BEFORE_S = 65535
#: ranks (or CPUs) on one node: more than any node has hardware threads
MAX_PER_NODE = 4096
#: GPUs in one node
MAX_GPUS_PER_NODE = 64
#: nodes of one job
MAX_NODES = 65536


class _Model(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them. Field docstrings become schema
    # descriptions only when a schema is asked for (json_schema): pydantic's use_attribute_docstrings
    # parses this file's source at import, about 35 ms of every `run local` and `submit` start.
    # No inf or nan: `lr: .inf` would pass `gt=0` and turn every weight into nan.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class Entry(_Model):
    """What each rank runs: exactly one of a script, a module or a built-in task."""

    script: Optional[str] = None
    """Path of a Python script, launched like `torchrun script.py args`."""
    module: Optional[str] = None
    """A module run like `python -m module args`."""
    task: Optional[str] = None
    """`package.module:function` returning a Task for the built-in Trainer."""
    args: list[str] = Field(default_factory=list)
    """Arguments passed to the script or module."""
    task_args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to the task factory."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Entry":
        given = [k for k in ("script", "module", "task") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of script, module or task (got {', '.join(given) or 'none'})"
            )
        if self.task and not re.fullmatch(r"[\w.]+:\w+", self.task):
            raise ValueError(f"task must look like 'package.module:function', got {self.task!r}")
        return self

    @property
    def kind(self) -> str:
        return entry_kind(self.script, self.module)


#: resources fields in Slurm's syntax: the pattern a value must match, and what to say when it does not
SLURM_SYNTAX = {
    "mem": (r"\d+[KMGT]?", "memory looks like 64G, 512M or 8000 (MB)"),
    "time": (r"(\d+-)?\d{1,2}(:\d{2}){0,2}", "time looks like MM, HH:MM:SS or D-HH:MM:SS"),
}


class Resources(_Model):
    """How much hardware the job asks for."""

    nodes: int = Field(1, ge=1, le=MAX_NODES)
    """Number of nodes (one node agent per node)."""
    gpus_per_node: Union[int, Literal["all"]] = "all"
    """GPUs per node: a count from 0 to 64, or `all` (every visible GPU; none on a CPU-only machine)."""
    procs_per_node: int = Field(2, ge=1, le=MAX_PER_NODE)
    """Ranks per node when the job runs on CPUs (no GPUs requested or visible); a local run also refuses more than this machine can hold (CPU cores, process and open-file limits)."""
    cpus_per_task: Optional[int] = Field(None, ge=1, le=MAX_PER_NODE)
    """CPUs for each node's task: its node agent and all its ranks (Slurm --cpus-per-task, on sbatch and srun). Unset: 8 per GPU rank (at most the node's CPUs / GPUs share), 1 per CPU rank."""
    mem: Optional[str] = None
    """Memory per node, Slurm syntax (e.g. `64G`)."""
    time: Optional[str] = None
    """Wall-time limit, Slurm syntax (e.g. `04:00:00` or `1-00:00:00`)."""

    @field_validator("gpus_per_node")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 or 'all'")
        if isinstance(v, int) and v > MAX_GPUS_PER_NODE:
            raise ValueError(f"must be <= {MAX_GPUS_PER_NODE} (GPUs in one node) or 'all'")
        return v

    @field_validator("mem", "time")
    @classmethod
    def _slurm_syntax(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        pattern, message = SLURM_SYNTAX[info.field_name]
        if v is not None and not re.fullmatch(pattern, v):
            raise ValueError(message)
        return v


class Distributed(_Model):
    """Process group, rendezvous, restarts and stopping."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """`auto`: nccl when ranks have GPUs, else gloo."""
    timeout_s: int = Field(600, ge=1, le=MAX_WAIT_S)
    """Collective timeout: a rank stuck longer than this fails the run instead of hanging. At most a week."""
    rdzv_timeout_s: int = Field(300, ge=1, le=MAX_WAIT_S)
    """How long nodes wait for each other at start. At most a week."""
    max_restarts: int = Field(0, ge=0, le=1000)
    """Restart all ranks this many times after a failure (they resume from the last checkpoint). A clean stop on a signal (exit 75) is never restarted."""
    stop_grace_s: int = Field(120, ge=1, le=MAX_WAIT_S)
    """After a stop signal, how long ranks get to checkpoint before they are killed. At most a week."""
    stop_check_every: int = Field(10, ge=1, le=MAX_STEPS)
    """The Trainer agrees on stop requests every N steps (one small all-reduce): a stop lands within N steps."""


class Watchdog(_Model):
    """The hang watchdog: notice ranks that stopped making progress, report where each one is, end the run."""

    stall_s: int = Field(120, ge=0, le=MAX_WAIT_S)
    """When no rank has made progress for this many seconds the run is hung: the node agents write `<run dir>/hang-<time>.md` (which rank is behind, every rank's stack and collective sequence number) and end the run with exit status 76, or restart it under distributed.max_restarts. Keep it below distributed.timeout_s, which otherwise ends a hang first, without the report. 0 turns the watchdog off. Ranks report progress through the Trainer, or `hpcgpu.dist.heartbeat()` and `should_stop()` in a script; a script that calls neither is watched for liveness only (a stopped process)."""
    requeues: int = Field(2, ge=0, le=1000)
    """Under Slurm: after a hang, requeue the job this many times at most, each time without the node(s) where the rank behind ran (accumulated, shown by `hpcgpu status`), while the partition keeps enough other nodes. Never when no rank was behind, or when the same rank hung again on another node (it hangs wherever it runs: the cause is in the code or data, not the node). 0: a hang ends the job."""


class Train(_Model):
    """Settings of the built-in Trainer (ignored for script and module entries)."""

    strategy: Literal["ddp", "fsdp", "dp"] = "ddp"
    """ddp: one rank per device; fsdp: shard parameters (fully_shard); dp: one process, all GPUs."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision on GPUs; fp16 uses a gradient scaler."""
    tf32: bool = True
    """On CUDA GPUs (Ampere and newer), let fp32 matmuls and convolutions use TF32 tensor cores: several times faster, 10-bit mantissa inputs. false: full fp32 (matches CPU results more closely)."""
    batch_size: int = Field(32, ge=1, le=2**20)
    """Samples per device per micro-step."""
    grad_accum: int = Field(1, ge=1, le=2**16)
    """Micro-steps per optimizer step (gradients all-reduced once per step)."""
    lr: float = Field(1e-3, gt=0, le=1e4)
    """Base learning rate, before scaling. Finite, at most 1e4: a larger one is a typo (3e4 for 3e-4)."""
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    """Scale lr by world_size x grad_accum (linear), its square root, or not at all."""
    epochs: int = Field(1, ge=1, le=MAX_STEPS)
    """Passes over the data (unless max_steps ends the run first)."""
    max_steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)
    """Stop after this many optimizer steps."""
    seed: int = Field(0, ge=-MAX_SEED, le=MAX_SEED)
    """Seed for model init, data order and dropout: same seed, same run. 32 bits either sign (numpy's range)."""
    num_workers: int = Field(0, ge=0, le=256)
    """DataLoader worker processes per rank."""
    log_every: int = Field(10, ge=1, le=MAX_STEPS)
    """Log loss and throughput every N steps."""
    eval_every_steps: int = Field(0, ge=0, le=MAX_STEPS)
    """Evaluate the Task's eval_dataset every N optimizer steps, and always after the last step; 0: only after the last step. Ignored when the Task has no eval_dataset."""
    eval_batch_size: Optional[int] = Field(None, ge=1, le=2**20)
    """Samples per device per evaluation batch (default: train.batch_size)."""


class Checkpoint(_Model):
    """When and where rank 0 saves, and how runs resume."""

    dir: Optional[str] = None
    """Checkpoint directory (default: `<run dir>/checkpoints`)."""
    every_steps: int = Field(100, ge=1, le=MAX_STEPS)
    """Save every N optimizer steps (and always at the end and on a stop request)."""
    keep_last: int = Field(3, ge=2, le=MAX_STEPS)
    """Checkpoints kept; at least 2 so a crash while writing never leaves none."""
    resume: str = "auto"
    """`auto` (newest valid checkpoint), `never`, or a checkpoint path."""
    async_save: bool = False
    """Write in the background; the loop waits only for the copy off the GPU."""
    keep_best: Optional[str] = None
    """`<metric>:max` or `<metric>:min`, a metric of the Task's evaluation (e.g. `accuracy:max`, `loss:min`): after each evaluation that improves it, the step is checkpointed (if it was not) and that checkpoint is kept beside the keep_last newest; `<checkpoint dir>/best.json` names it. Unset: no best checkpoint."""

    @field_validator("keep_best")
    @classmethod
    def _metric_and_direction(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[\w./-]+:(max|min)", v):
            raise ValueError(f"keep_best must look like 'accuracy:max' or 'loss:min' (an evaluation metric, then "
                             f"max or min), got {v!r}")
        return v

    @field_validator("keep_last", mode="before")
    @classmethod
    def _keep_two(cls, v: Any) -> Any:
        if v == 1:
            raise ValueError(
                "keep_last must be >= 2: with 1, a crash while writing the new checkpoint "
                "can leave no valid checkpoint at all"
            )
        return v


class Logging(_Model):
    """Where runs go and what they show."""

    dir: str = "runs"
    """Base directory of run directories (relative to the current directory)."""

    @field_validator("dir")
    @classmethod
    def _one_line(cls, v: str) -> str:
        return _single_line(v)
    tensorboard: bool = True
    """Write TensorBoard events on rank 0 to `<run dir>/tb` (when logging.trackers names tensorboard; false turns it off either way)."""
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(["tensorboard"])
    """Where rank 0 sends metrics and hyper-parameters, all under the run id (a resumed or requeued run continues the same tracked run): tensorboard, mlflow (`pip install 'hpcgpu[mlflow]'`), wandb (`pip install 'hpcgpu[wandb]'`); see docs/tracking.md. A tracker that fails warns once and training goes on."""
    mlflow_tracking_uri: Optional[str] = None
    """MLflow tracking URI (`http://host:5000`, `sqlite:///path/mlflow.db`). Unset: MLFLOW_TRACKING_URI from the environment, else `sqlite:///<logging.dir>/mlflow.db`. Never credentials (the spec is written to the run directory): give MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, in the environment."""
    mlflow_experiment: Optional[str] = None
    """MLflow experiment (made if missing). Unset: the spec's name."""
    wandb_project: Optional[str] = None
    """W&B project. Unset: the spec's name."""
    wandb_entity: Optional[str] = None
    """W&B entity (user or team). Unset: the API key's default."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """offline: W&B writes its files under `<run dir>/wandb` and sends nothing (`wandb sync` uploads them later); online: it sends as it goes, with WANDB_API_KEY from the environment (never from the spec)."""

    @field_validator("mlflow_tracking_uri", "mlflow_experiment", "wandb_project", "wandb_entity")
    @classmethod
    def _tracker_text(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is not None and re.search(r"://[^/?#@\s]+@", v):
            raise ValueError(f"{info.field_name} holds credentials (user:password@), and the spec is written to the "
                             "run directory: remove them and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                             "(or MLFLOW_TRACKING_TOKEN) in the environment")
        return _single_line(v)

    @field_validator("trackers")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        twice = sorted({name for name in v if v.count(name) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} named more than once; name each tracker once")
        return v
    progress: Literal["auto", "bar", "lines", "off"] = "auto"
    """auto: a live bar on a terminal, plain periodic lines in a log file."""
    console: Literal["rank0", "all", "none"] = "rank0"
    """What the launcher's console shows of the ranks (every rank always logs to logs/rank<N>.log):
    rank0: rank 0's lines; all: every rank's, each prefixed `[rank N] `; none: nothing. Rank stdout
    goes to stdout, rank stderr to stderr; a failed rank's traceback or last lines always show."""


class Debug(_Model):
    """Debug variables for NCCL and torch.distributed, set in one place."""

    nccl: Literal["off", "warn", "info", "trace"] = "off"
    """NCCL_DEBUG level; a per-rank NCCL_DEBUG_FILE goes to `<run dir>/logs`."""
    nccl_subsys: list[str] = Field(default_factory=list)
    """NCCL_DEBUG_SUBSYS, e.g. [INIT, NET]."""
    torch_distributed: Literal["off", "info", "detail"] = "off"
    """TORCH_DISTRIBUTED_DEBUG (detail also checks collectives match across ranks; on CPU ranks torch
    crashes setting up DDP in detail mode, so a Trainer run there is refused: use info)."""
    flight_recorder: bool = False
    """Keep a trace of recent collectives and dump it to `<run dir>/flight` on a timeout."""


class Slurm(_Model):
    """Slurm submission settings (used by `hpcgpu submit slurm`)."""

    partition: Optional[str] = None
    """Partition (sbatch --partition); the cluster's default when unset."""
    account: Optional[str] = None
    """Account to charge (sbatch --account)."""
    qos: Optional[str] = None
    """Quality of service (sbatch --qos)."""
    constraint: Optional[str] = None
    """Node features required (sbatch --constraint), e.g. `h100`."""
    signal_before_s: int = Field(180, ge=10, le=MAX_SIGNAL_BEFORE_S)
    """Ask Slurm for SIGUSR2 this many seconds before the time limit; leave distributed.stop_grace_s
    plus ~15 s so the checkpoint and the requeue both happen before Slurm's kill. At most 65535 (Slurm's limit)."""
    max_timeout_requeues: int = Field(3, ge=0, le=1000)
    """Requeues after hitting the time limit; preemptions are not capped."""
    extra: dict[str, Union[str, int, bool]] = Field(default_factory=dict)
    """Extra sbatch options, e.g. {exclusive: true, reservation: big}."""

    @field_validator("extra")
    @classmethod
    def _option_names(cls, v: dict) -> dict:
        for key, value in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
                raise ValueError(f"sbatch option name {key!r} must be lowercase letters, digits, - or _")
            _single_line(value)
        return v

    @field_validator("partition", "account", "qos", "constraint")
    @classmethod
    def _one_line(cls, v: Optional[str]) -> Optional[str]:
        return _single_line(v)


class Container(_Model):
    """Run the node agent inside a container image."""

    runtime: Literal["apptainer", "docker", "podman", "pyxis"] = "apptainer"
    """Container runtime; pyxis means `srun --container-image` (Slurm only)."""
    image: str
    """Image reference (docker/podman/pyxis) or .sif path (apptainer)."""
    binds: list[str] = Field(default_factory=list)
    """Extra mounts, `SRC[:DST[:ro]]`."""
    extra_args: list[str] = Field(default_factory=list)
    """Extra arguments for the runtime, placed before the image."""
    env_passthrough: list[str] = Field(default_factory=list)
    """Names of more host variables to pass into the container (values never reach the command line)."""

    @field_validator("env_passthrough")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"environment variable name {name!r} is not valid")
        return v


#: the most values in one sweep key's list, and the most explicit override sets (the task count is bounded too)
MAX_SWEEP_VALUES = 1000


class Sweep(_Model):
    """Many runs from this spec: `run local` queues them over free GPU sets or CPU slots, `submit slurm` submits one job array. See docs/sweeps.md."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted spec key -> list of values, e.g. `train.lr: [1e-3, 3e-4]`; every combination is one task (the first key varies slowest). `--sweep KEY=V1,V2` replaces or adds a key."""
    sets: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_SWEEP_VALUES)
    """Explicit override sets (dotted key -> value), each combined with every grid combination: `[{train.lr: 1e-3, train.batch_size: 32}, {train.lr: 3e-4, train.batch_size: 64}]`."""
    parallel: int = Field(0, ge=0, le=MAX_SWEEP_VALUES)
    """Tasks running at once (Slurm: the array's %N throttle). 0: on Slurm no throttle; locally as many as the GPUs (resources.gpus_per_node each) or CPUs (one slot per rank) allow."""
    metric: str = Field("final_loss", max_length=200)
    """The summary.json value the end-of-sweep table ranks tasks by (final_loss, or an evaluation metric such as eval/loss)."""
    goal: Literal["min", "max"] = "min"
    """Whether the best task has the lowest (min) or highest (max) metric."""

    @field_validator("grid")
    @classmethod
    def _grid_lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep.grid.{key}: give at least one value")
            if len(values) > MAX_SWEEP_VALUES:
                raise ValueError(f"sweep.grid.{key}: {len(values)} values, more than {MAX_SWEEP_VALUES}")
        return v


class Spec(_Model):
    """One job: what to run, on what, and how."""

    name: str = "hpcgpu"
    """Job name (run directories and Slurm job names start with it)."""
    entry: Entry = Field(default_factory=lambda: Entry(task=DEMO_TASK))
    """What each rank runs (default: the bundled demo task)."""
    resources: Resources = Field(default_factory=Resources)
    """Nodes, GPUs, CPU ranks, memory and time."""
    distributed: Distributed = Field(default_factory=Distributed)
    """Backend, timeouts, restarts, stop grace."""
    train: Train = Field(default_factory=Train)
    """Built-in Trainer settings."""
    checkpoint: Checkpoint = Field(default_factory=Checkpoint)
    """Checkpointing and resume."""
    logging: Logging = Field(default_factory=Logging)
    """Run directories, TensorBoard, progress."""
    debug: Debug = Field(default_factory=Debug)
    """NCCL and torch.distributed debug variables."""
    watchdog: Watchdog = Field(default_factory=Watchdog)
    """Hang detection and reports."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for every rank (they override hpcgpu's defaults)."""
    secret_env: list[str] = Field(default_factory=list)
    """Names of variables whose values are secrets, besides names with a credential word (TOKEN, KEY, PASSWORD, ...) and values with credentials in a URL (`scheme://user:pw@host`): files and output show `<redacted>`, the ranks get the value through their environment (export it to resume). `HPCGPU_SECRET_ENV=NAME,NAME` adds names."""
    slurm: Slurm = Field(default_factory=Slurm)
    """Slurm submission settings."""
    container: Optional[Container] = None
    """Run inside a container image (unset: on the host)."""
    sweep: Optional[Sweep] = None
    """Run many tasks from this spec, one per combination of values (unset: one run). Each task's own spec has no sweep section."""

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("name: letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit")
        return v

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, v: dict | list) -> dict | list:
        for key in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"environment variable name {key!r} is not valid")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> "Spec":
        if self.train.strategy == "dp" and self.resources.nodes > 1:
            raise ValueError("train.strategy dp runs one process on one node; use ddp or fsdp for nodes > 1")
        if self.entry.kind != "task" and self.train.strategy == "dp":
            raise ValueError("train.strategy dp applies to task entries only")
        if self.train.strategy == "dp" and self.train.precision == "bf16":
            # autocast's dtype does not reach DataParallel's replica threads: they would run fp16
            # without a scaler (the worker refuses it too, for ranks started by plain torchrun)
            raise ValueError("train.strategy dp with train.precision bf16 would run fp16 without a gradient "
                             "scaler (DataParallel's threads lose autocast's dtype); use train.strategy ddp")
        return self
