"""`hpcgpu train`: the node agent. The same code on a laptop, in a container and on a Slurm node.

It reads the resolved spec from the run directory, starts this node's ranks through torch
elastic's agent (in-process, c10d rendezvous), forwards SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2
to them, shows rank 0's output, and turns the ranks' outcome into one exit status:
0 done, 1 failed (naming the rank and its traceback), 75 stopped cleanly and resumable.
Imports torch lazily, inside run_node.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu import envnames, exitcodes
from hpcgpu.console import ConsoleFollower
from hpcgpu.errors import UserError
from hpcgpu.plan import node_layout, rank_env
from hpcgpu.spec import load_spec

# torch elastic only handles TERM/INT/HUP/QUIT by default; Slurm warns with USR1/USR2
# before the time limit or preemption (pytorch/pytorch#154849).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
RDZV_ENDPOINT = "HPCGPU_RDZV_ENDPOINT"


@dataclass(frozen=True)
class NodeRole:
    """Where this node agent sits: how many nodes, its index, and where to rendezvous."""

    nnodes: int
    node_rank: int
    endpoint: str  # host:port; port 0 on a single node lets the store pick a free port
    is_host: bool
    run_id: str


def node_role(nnodes: int, run_id: str, environ: Mapping[str, str]) -> NodeRole:
    """Single node: rendezvous on loopback, free port picked by the OS (never collides).
    Several nodes: the endpoint the head node published (HPCGPU_RDZV_ENDPOINT)."""
    if nnodes == 1:
        return NodeRole(1, 0, "127.0.0.1:0", True, run_id)
    endpoint = environ.get(RDZV_ENDPOINT)
    if not endpoint:
        raise UserError(
            f"the spec asks for {nnodes} nodes but {RDZV_ENDPOINT} is not set",
            hint="multi-node runs are started by `hpcgpu submit slurm`, which sets it on every node",
        )
    node_rank = int(environ.get("SLURM_NODEID", environ.get("HPCGPU_NODE_RANK", "0")))
    job = environ.get("SLURM_JOB_ID", run_id)
    return NodeRole(nnodes, node_rank, endpoint, node_rank == 0, f"{job}-{environ.get('SLURM_RESTART_COUNT', '0')}")


def count_visible_gpus(environ: Mapping[str, str]) -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else NVML's count, else 0."""
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        ids = [x for x in cvd.split(",") if x.strip() and x.strip() != "-1"]
        if not ids or cvd.strip().startswith("-1"):
            return 0
    try:
        import pynvml  # from nvidia-ml-py; cheap, and no CUDA context is created

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0
    return min(count, len(ids)) if cvd is not None else count


def _stopped_markers(run_dir: Path, since: float) -> list[dict]:
    """Exit markers of ranks that stopped cleanly during this attempt (written after `since`)."""
    out = []
    for path in (run_dir / "exit").glob("rank*.json"):
        try:
            if path.stat().st_mtime < since:
                continue
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("status") == "stopped":
            out.append(data)
    return out


def _kill_children() -> None:
    """SIGKILL our direct children (the ranks): used on a second Ctrl-C."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def describe_failure(failures: dict) -> str:
    """Name the rank that failed first, with its traceback; ranks stopped because of it come after."""
    def order(item):
        rank, f = item
        return (f.exitcode < 0, f.timestamp, rank)  # real errors before ranks the agent killed

    (first_rank, first), *others = sorted(failures.items(), key=order)
    lines = [f"rank {first_rank} (local rank {first.local_rank}, pid {first.pid}) failed with {_how(first)}"]
    msg = first.message
    if isinstance(msg, dict):
        tb = msg.get("extraInfo", {}).get("py_callstack") or msg.get("message", "")
        lines.append("  " + str(tb).rstrip().replace("\n", "\n  "))
    elif msg:
        lines.append(f"  {msg}")
    if others:
        lines.append("then stopped: " + ", ".join(f"rank {r} ({_how(f)})" for r, f in others))
    return "\n".join(lines)


def _how(f) -> str:
    return f"signal {f.signal_name()}" if f.exitcode < 0 else f"exit code {f.exitcode}"


def _quiet_elastic_logs() -> None:
    """hpcgpu prints its own summary of failures and signals; elastic's lines would repeat it less clearly.
    Its loggers set their own levels (torch/distributed/elastic/utils/logging.py), so set each one."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic") or name.startswith("torch.distributed.launcher"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _launch_config(spec, role: NodeRole, nproc: int, run_dir: Path):
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=role.nnodes,
        max_nodes=role.nnodes,
        nproc_per_node=nproc,
        run_id=role.run_id,
        role="hpcgpu",
        rdzv_endpoint=role.endpoint,
        rdzv_backend="c10d",
        rdzv_configs={"join_timeout": spec.distributed.rdzv_timeout_s, "is_host": role.is_host},
        max_restarts=spec.distributed.max_restarts,
        monitor_interval=0.1,
        signals_to_handle=FORWARDED_SIGNALS,
        shutdown_timeout=spec.distributed.stop_grace_s,
        logs_specs=DefaultLogsSpecs(log_dir=str(run_dir / "logs" / "elastic")),
    )


def run_node(run_dir: Path, environ: Optional[Mapping[str, str]] = None) -> int:
    """Start this node's ranks and wait; return the exit status (see module docstring)."""
    environ = dict(os.environ if environ is None else environ)
    spec, _ = load_spec(run_dir / "spec.yaml")
    layout = node_layout(spec, count_visible_gpus(environ))
    role = node_role(spec.resources.nodes, run_dir.name, environ)
    os.environ.update(rank_env(spec, str(run_dir), environ).added)
    os.environ[envnames.CONSOLE_TTY] = "1" if sys.stdout.isatty() else "0"

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    _quiet_elastic_logs()

    started = time.time()
    follower = ConsoleFollower(run_dir, sys.stdout.buffer).start()
    try:
        elastic_launch(_launch_config(spec, role, layout.nproc, run_dir), sys.executable)("-m", "hpcgpu.worker")
        return exitcodes.OK
    except ChildFailedError as e:
        if all(f.exitcode == exitcodes.STOPPED_RESUMABLE for f in e.failures.values()):
            return exitcodes.STOPPED_RESUMABLE
        follower.stop()
        print(f"hpcgpu: training failed\n{describe_failure(e.failures)}", file=sys.stderr)
        return exitcodes.FAILED
    except SignalException as e:
        # The ranks got the signal and stop_grace_s to save; those that saved left a marker.
        if _stopped_markers(run_dir, started):
            return exitcodes.STOPPED_RESUMABLE
        print(f"hpcgpu: stopped by {e.sigval.name} before the ranks could checkpoint", file=sys.stderr)
        return 128 + int(e.sigval)
    except KeyboardInterrupt:
        _kill_children()
        return 130
    finally:
        follower.stop()
