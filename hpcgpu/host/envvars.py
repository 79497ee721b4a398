"""The environment every rank gets: debug defaults merged *under* the user's own, and redaction.

Pure and torch-free. Every default hpcgpu sets comes with the reason it is set and a link to where
that is documented, printed once when it takes effect (and in the dry run), so nobody has to guess
where a variable came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping

from hpcgpu.contract.plan import REDACTED
from hpcgpu.host.secrets import shown

if TYPE_CHECKING:
    from hpcgpu.host.spec import Debug

__all__ = ["REDACTED", "EnvDefault", "MergedEnv", "debug_defaults", "merge_under"]


_NCCL_ENV = "https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html"
_TORCH_DEBUG = "https://docs.pytorch.org/docs/stable/distributed.html#debugging-torch-distributed-applications"
_FLIGHT = "https://docs.pytorch.org/tutorials/prototype/flight_recorder_tutorial.html"


@dataclass(frozen=True)
class EnvDefault:
    """One variable hpcgpu sets unless the user already did, why, and where that is documented.

    Not set any more: TORCH_NCCL_ASYNC_ERROR_HANDLING=1. torch's default since 2.2 is 3 (tear down
    the process without the communicator abort), because the abort that 1 asks for can itself hang
    (https://github.com/pytorch/pytorch/issues/110723); torch's default is the right one.
    """

    name: str
    value: str
    why: str
    link: str
    """the documentation or issue that explains the value (https://...)"""

    def __post_init__(self) -> None:
        if not self.why or not self.link.startswith("https://"):
            raise ValueError(f"default {self.name}: give its reason and a https:// link to where it is explained")

    @property
    def reason(self) -> str:
        return f"{self.why}; {self.link}"


#: collectives each rank's flight recorder keeps for a hang report (about 0.5 KB each)
WATCHDOG_FLIGHT_ENTRIES = "1000"


def debug_defaults(debug: Debug, run_dir: str, watchdog: bool = False) -> list[EnvDefault]:
    """The NCCL / torch.distributed variables the spec's debug section (and the watchdog) ask for."""
    out: list[EnvDefault] = [
        # One thread per rank by default: N ranks x all cores oversubscribes the CPU badly (torchrun
        # does the same when it starts more than one process per node).
        EnvDefault("OMP_NUM_THREADS", "1", "avoid N ranks x all-cores thread oversubscription",
                   "https://docs.pytorch.org/docs/stable/elastic/run.html"),
    ]
    if debug.nccl != "off":
        out.append(EnvDefault("NCCL_DEBUG", debug.nccl.upper(), "debug.nccl", f"{_NCCL_ENV}#nccl-debug"))
        # %h host, %p pid: one file per rank, next to the rank logs
        out.append(EnvDefault("NCCL_DEBUG_FILE", f"{run_dir}/logs/nccl.%h.%p.log", "debug.nccl: per-rank NCCL log",
                              f"{_NCCL_ENV}#nccl-debug-file"))
    if debug.nccl_subsys:
        out.append(EnvDefault("NCCL_DEBUG_SUBSYS", ",".join(debug.nccl_subsys), "debug.nccl_subsys",
                              f"{_NCCL_ENV}#nccl-debug-subsys"))
    if debug.torch_distributed != "off":
        out.append(EnvDefault("TORCH_DISTRIBUTED_DEBUG", debug.torch_distributed.upper(), "debug.torch_distributed",
                              _TORCH_DEBUG))
        out.append(EnvDefault("TORCH_CPP_LOG_LEVEL", "INFO", "debug.torch_distributed: show c10d logs", _TORCH_DEBUG))
    if debug.flight_recorder:
        out.append(EnvDefault("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000", "debug.flight_recorder: keep recent collectives",
                              _FLIGHT))
    if watchdog:
        # the hang report's "who is behind": each rank's last entered and completed collective (a
        # torch that reads only the older TORCH_NCCL_TRACE_BUFFER_SIZE gets it from the node agent)
        out.append(EnvDefault("TORCH_FR_BUFFER_SIZE", WATCHDOG_FLIGHT_ENTRIES,
                              "watchdog: record recent collectives (gloo and NCCL) for a hang report", _FLIGHT))
    if debug.flight_recorder:
        out.append(EnvDefault("TORCH_NCCL_DUMP_ON_TIMEOUT", "1", "debug.flight_recorder: dump on timeout", _FLIGHT))
        out.append(EnvDefault("TORCH_FR_DUMP_TEMP_FILE", f"{run_dir}/flight/rank_", "debug.flight_recorder: dump location",
                              _FLIGHT))
    return out


@dataclass(frozen=True)
class MergedEnv:
    """Variables to add to the ranks' environment, and what each default did."""

    added: dict[str, str]
    notes: list[str]


def merge_under(defaults: list[EnvDefault], spec_env: Mapping[str, str], user_env: Mapping[str, str],
                marked: Collection[str] = ()) -> MergedEnv:
    """Defaults < spec `env:` < the user's own environment: hpcgpu never overrides what the user set.
    The notes show secret values (host.secrets; marked: the spec's secret_env) as REDACTED."""
    added: dict[str, str] = {}
    notes: list[str] = []
    for d in defaults:
        if d.name in user_env:
            notes.append(f"{d.name}: keeping your value {shown(d.name, user_env[d.name], marked)} (hpcgpu would set {d.value}: {d.reason})")
        elif d.name in spec_env:
            notes.append(f"{d.name}={shown(d.name, spec_env[d.name], marked)} from the spec's env (default {d.value}: {d.reason})")
        else:
            added[d.name] = d.value
            notes.append(f"{d.name}={d.value} ({d.reason})")
    for name, value in spec_env.items():
        if name in user_env and user_env[name] != value:
            notes.append(f"{name}: spec env sets it, your environment's value wins")
            continue
        added[name] = value
    return MergedEnv(added=added, notes=notes)
