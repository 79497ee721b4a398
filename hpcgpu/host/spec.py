"""The job spec: pydantic v2 models, safe YAML loading, errors that name the key path and line.

A spec that loads is valid; nothing later re-checks it. Torch-free (the CLI imports this).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.specview import RESOLVED_HEADER, entry_kind
from hpcgpu.contract.text import has_control_chars
from hpcgpu.host.secrets import redact

DEFAULT_SPEC_FILE = "hpcgpu.yaml"
DEMO_TASK = "hpcgpu.examples.mlp:make_task"


def _single_line(value: Any) -> Any:
    """Refuse control characters: in an sbatch script a newline would end the #SBATCH line and
    the rest would run as a shell command."""
    if has_control_chars(value):
        raise ValueError(f"{value!r} contains a newline or another control character; give a single-line value")
    return value


class _Model(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them. Field docstrings become schema
    # descriptions only when a schema is asked for (json_schema): pydantic's use_attribute_docstrings
    # parses this file's source at import, about 35 ms of every `run local` and `submit` start.
    model_config = ConfigDict(extra="forbid", validate_default=True)


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


class Resources(_Model):
    """How much hardware the job asks for."""

    nodes: int = Field(1, ge=1)
    """Number of nodes (one node agent per node)."""
    gpus_per_node: Union[int, Literal["all"]] = "all"
    """GPUs per node: a count, or `all` (every visible GPU; none on a CPU-only machine)."""
    procs_per_node: int = Field(2, ge=1)
    """Ranks per node when the job runs on CPUs (no GPUs requested or visible)."""
    cpus_per_task: Optional[int] = Field(None, ge=1)
    """CPU cores per node agent (Slurm --cpus-per-task)."""
    mem: Optional[str] = None
    """Memory per node, Slurm syntax (e.g. `64G`)."""
    time: Optional[str] = None
    """Wall-time limit, Slurm syntax (e.g. `04:00:00` or `1-00:00:00`)."""

    @field_validator("gpus_per_node")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 or 'all'")
        return v

    @field_validator("mem")
    @classmethod
    def _mem_syntax(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"\d+[KMGT]?", v):
            raise ValueError("memory looks like 64G, 512M or 8000 (MB)")
        return v

    @field_validator("time")
    @classmethod
    def _time_syntax(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"(\d+-)?\d{1,2}(:\d{2}){0,2}", v):
            raise ValueError("time looks like MM, HH:MM:SS or D-HH:MM:SS")
        return v


class Distributed(_Model):
    """Process group, rendezvous, restarts and stopping."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """`auto`: nccl when ranks have GPUs, else gloo."""
    timeout_s: int = Field(600, ge=1)
    """Collective timeout: a rank stuck longer than this fails the run instead of hanging."""
    rdzv_timeout_s: int = Field(300, ge=1)
    """How long nodes wait for each other at start."""
    max_restarts: int = Field(0, ge=0)
    """Restart all ranks this many times after a failure (they resume from the last checkpoint). A clean stop on a signal (exit 75) is never restarted."""
    stop_grace_s: int = Field(120, ge=1)
    """After a stop signal, how long ranks get to checkpoint before they are killed."""
    stop_check_every: int = Field(10, ge=1)
    """The Trainer agrees on stop requests every N steps (one small all-reduce): a stop lands within N steps."""


class Train(_Model):
    """Settings of the built-in Trainer (ignored for script and module entries)."""

    strategy: Literal["ddp", "fsdp", "dp"] = "ddp"
    """ddp: one rank per device; fsdp: shard parameters (fully_shard); dp: one process, all GPUs."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision on GPUs; fp16 uses a gradient scaler."""
    batch_size: int = Field(32, ge=1)
    """Samples per device per micro-step."""
    grad_accum: int = Field(1, ge=1)
    """Micro-steps per optimizer step (gradients all-reduced once per step)."""
    lr: float = Field(1e-3, gt=0)
    """Base learning rate, before scaling."""
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    """Scale lr by world_size x grad_accum (linear), its square root, or not at all."""
    epochs: int = Field(1, ge=1)
    """Passes over the data (unless max_steps ends the run first)."""
    max_steps: Optional[int] = Field(None, ge=1)
    """Stop after this many optimizer steps."""
    seed: int = 0
    """Seed for model init, data order and dropout: same seed, same run."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes per rank."""
    log_every: int = Field(10, ge=1)
    """Log loss and throughput every N steps."""


class Checkpoint(_Model):
    """When and where rank 0 saves, and how runs resume."""

    dir: Optional[str] = None
    """Checkpoint directory (default: `<run dir>/checkpoints`)."""
    every_steps: int = Field(100, ge=1)
    """Save every N optimizer steps (and always at the end and on a stop request)."""
    keep_last: int = Field(3, ge=2)
    """Checkpoints kept; at least 2 so a crash while writing never leaves none."""
    resume: str = "auto"
    """`auto` (newest valid checkpoint), `never`, or a checkpoint path."""
    async_save: bool = False
    """Write in the background; the loop waits only for the copy off the GPU."""

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
    """Write TensorBoard events on rank 0 to `<run dir>/tb`."""
    progress: Literal["auto", "bar", "lines", "off"] = "auto"
    """auto: a live bar on a terminal, plain periodic lines in a log file."""


class Debug(_Model):
    """Debug variables for NCCL and torch.distributed, set in one place."""

    nccl: Literal["off", "warn", "info", "trace"] = "off"
    """NCCL_DEBUG level; a per-rank NCCL_DEBUG_FILE goes to `<run dir>/logs`."""
    nccl_subsys: list[str] = Field(default_factory=list)
    """NCCL_DEBUG_SUBSYS, e.g. [INIT, NET]."""
    torch_distributed: Literal["off", "info", "detail"] = "off"
    """TORCH_DISTRIBUTED_DEBUG (detail also checks collectives match across ranks)."""
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
    signal_before_s: int = Field(180, ge=10)
    """Ask Slurm for SIGUSR2 this many seconds before the time limit; leave distributed.stop_grace_s
    plus ~15 s so the checkpoint and the requeue both happen before Slurm's kill."""
    max_timeout_requeues: int = Field(3, ge=0)
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
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for every rank (they override hpcgpu's defaults)."""
    slurm: Slurm = Field(default_factory=Slurm)
    """Slurm submission settings."""
    container: Optional[Container] = None
    """Run inside a container image (unset: on the host)."""

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v):
            raise ValueError("name: letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict) -> dict:
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
        return self


# ---------------------------------------------------------------- loading


class _SafeLineLoader(yaml.SafeLoader):
    """SafeLoader (no Python object tags) that rejects duplicate keys."""


def _construct_mapping(loader: _SafeLineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_SafeLineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (tuple) to its 1-based line in the YAML text."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                sub = path + (k.value,)
                lines[sub] = k.start_mark.line + 1
                walk(v, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _format_errors(err: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    out = [f"{source}: invalid spec ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        # pydantic puts union branch names in loc (e.g. 'int', "literal['all']"); drop them
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("int", "str"))))
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f" (line {line})" if line else ""
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; see `hpcgpu spec schema` for the allowed keys"
        out.append(f"  {key}{where}: {msg}")
    return "\n".join(out)


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse and validate YAML text; raise UserError naming each bad key path and line."""
    try:
        data = yaml.load(text, Loader=_SafeLineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        hint = "hpcgpu loads YAML safely: Python object tags (!!python/...) are refused" if "tag" in problem else None
        raise UserError(f"{source}:{where}: not valid YAML: {problem}", hint=hint) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: the spec must be a mapping of keys (name:, entry:, ...), got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise UserError(
            _format_errors(e, source, _key_lines(text)),
            hint="`hpcgpu spec schema` prints every key with its type; docs/spec.md explains them",
        ) from None


def load_spec(path: str | Path | None) -> tuple[Spec, str]:
    """Load the spec at path; with None, `./hpcgpu.yaml` if present, else the bundled demo.

    Returns the spec and where it came from (a path, or "<bundled demo>").
    """
    if path is None:
        if Path(DEFAULT_SPEC_FILE).is_file():
            path = DEFAULT_SPEC_FILE
        else:
            return Spec(name="demo"), "<bundled demo>"
    p = Path(path)
    if not p.is_file():
        raise UserError(f"spec file {str(p)!r} not found", hint="pass -f PATH, or run `hpcgpu init` to write one")
    return parse_spec(p.read_text(encoding="utf-8"), str(p)), str(p)


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (what nodes and ranks read); values of secret-looking `env:` names
    are written as <redacted> (they reach the ranks through the environment, never a file)."""
    return RESOLVED_HEADER + yaml.safe_dump(resolved_data(spec), sort_keys=False)


def resolved_data(spec: Spec) -> dict[str, Any]:
    """The spec as plain JSON data, secret env values REDACTED: what spec.yaml and plan.json hold."""
    data = spec.model_dump(mode="json")
    data["env"] = redact(data["env"])
    return data


def _attribute_docs(cls: type) -> dict[str, str]:
    """{field: docstring} for the string literal right after each `field: type = ...` of a model."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def json_schema() -> dict:
    """The spec's JSON Schema, each property described by its field's docstring."""
    schema = Spec.model_json_schema()
    for cls in _Model.__subclasses__():
        target = schema if cls is Spec else schema.get("$defs", {}).get(cls.__name__)
        for name, doc in _attribute_docs(cls).items() if target else ():
            if name in target.get("properties", {}):
                target["properties"][name]["description"] = doc
    return schema


def spec_schema() -> str:
    """JSON Schema of the spec, for editors (yaml-language-server) and docs."""
    return json.dumps(json_schema(), indent=2, sort_keys=True)


#: HPCGPU_* variables that override the spec (and are overridden by flags): name -> dotted key
ENV_OVERRIDES: dict[str, str] = {
    "HPCGPU_NAME": "name",
    "HPCGPU_NODES": "resources.nodes",
    "HPCGPU_GPUS_PER_NODE": "resources.gpus_per_node",
    "HPCGPU_NPROC": "resources.procs_per_node",
    "HPCGPU_MAX_RESTARTS": "distributed.max_restarts",
    "HPCGPU_BACKEND": "distributed.backend",
    "HPCGPU_PARTITION": "slurm.partition",
    "HPCGPU_ACCOUNT": "slurm.account",
    "HPCGPU_QOS": "slurm.qos",
    "HPCGPU_LOG_DIR": "logging.dir",
}


class _EnvOverrides(dict):
    """Overrides read from HPCGPU_* variables: errors name the variables, not "command-line options"."""

    variables: tuple[str, ...] = ()


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """The spec overrides given by HPCGPU_* variables (values are coerced by validation)."""
    found = _EnvOverrides({key: environ[name] for name, key in ENV_OVERRIDES.items() if environ.get(name)})
    found.variables = tuple(name for name in ENV_OVERRIDES if environ.get(name))
    return found


def apply_overrides(spec: Spec, overrides: dict[str, Any]) -> Spec:
    """Return a new validated spec with dotted-key overrides (e.g. {'resources.nodes': 2}) applied."""
    data = spec.model_dump(mode="json")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        source = "command-line options"
        if isinstance(overrides, _EnvOverrides):
            source = f"environment variables ({', '.join(overrides.variables)})"
        raise UserError(_format_errors(e, source, {})) from None
