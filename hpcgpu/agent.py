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
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu import envnames, exitcodes
from hpcgpu.console import ConsoleFollower
from hpcgpu.errors import UserError
from hpcgpu.envvars import REDACTED, withheld_env
from hpcgpu.plan import node_layout, rank_env
from hpcgpu.runs import make_private_dir
from hpcgpu.spec import load_spec

# torch elastic only handles TERM/INT/HUP/QUIT by default; Slurm warns with USR1/USR2
# before the time limit or preemption (pytorch/pytorch#154849).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
RDZV_ENDPOINT = "HPCGPU_RDZV_ENDPOINT"
#: after a rank failed, how long the others get to exit on SIGTERM before SIGKILL. torch elastic
#: waits a fixed 30 s here; with a peer gone they cannot checkpoint anyway, and a rank stuck
#: outside a collective would hold the failure report (and any restart) for all of it.
FAILURE_GRACE_S = 5


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


def describe_failure(failures: dict, timeout_s: Optional[int] = None) -> str:
    """Name the rank that failed first, with its traceback; ranks stopped because of it come after."""
    # torch elastic adds the ranks that died on their own first and the ranks it then stopped
    # with SIGTERM after them (dict order). Its timestamps are whole seconds, so they cannot tell
    # a rank killed with SIGKILL from the peer whose collective failed a moment later.
    def order(item):
        position, (rank, f) = item
        return (f.exitcode == -signal.SIGTERM, position)

    (_, (first_rank, first)), *others = sorted(enumerate(failures.items()), key=order)
    lines = [f"rank {first_rank} (local rank {first.local_rank}, pid {first.pid}) failed with {_how(first)}"]
    msg = first.message
    text = ""
    if isinstance(msg, dict):
        text = str(msg.get("extraInfo", {}).get("py_callstack") or msg.get("message", ""))
        lines.append("  " + text.rstrip().replace("\n", "\n  "))
    elif msg:
        text = str(msg)
        lines.append(f"  {msg}")
    if others:
        lines.append("then stopped: " + ", ".join(f"rank {r} ({_how(f)})" for _, (r, f) in others))
    hint = _failure_hint(first, text, [r for _, (r, _f) in others], timeout_s)
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


def _how(f) -> str:
    return f"signal {f.signal_name()}" if f.exitcode < 0 else f"exit code {f.exitcode}"


def _failure_hint(first, text: str, others: list, timeout_s: Optional[int]) -> str:
    """One line on what a well-known failure means and what to do about it."""
    if first.exitcode == -signal.SIGKILL:
        return ("SIGKILL comes from outside the run: the kernel's out-of-memory killer (see `dmesg`), "
                "a scheduler, or kill -9")
    # gloo: "Timed out waiting 5000ms for recv"; NCCL: "Watchdog caught collective operation timeout"
    if re.search(r"Timed out waiting \d+ ?ms|collective operation timeout", text):
        stuck = ", ".join(f"rank {r}" for r in others) or "another rank"
        return (f"a collective waited longer than distributed.timeout_s ({timeout_s} s) for {stuck}: that "
                "rank is stuck (a collective only some ranks call, a deadlock, a slow data loader) or dead; "
                "see its log. Raise distributed.timeout_s only if the work between collectives is that slow")
    if "No space left on device" in text or "Errno 28" in text:
        return ("a file system is full. A checkpoint appears only once it is complete, so the previous "
                "one is intact: free space (or point checkpoint.dir at a bigger disk) and run again to resume")
    return ""


def _quiet_elastic_logs() -> None:
    """hpcgpu prints its own summary of failures and signals; elastic's lines would repeat it less clearly.
    Its loggers set their own levels (torch/distributed/elastic/utils/logging.py), so set each one."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic") or name.startswith("torch.distributed.launcher"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


# ---------------------------------------------------------------- rendezvous

RDZV_BACKEND = "hpcgpu"
#: the store and run id of the rendezvous this process joined (for the message when it fails)
_rdzv: dict = {}


def _tcp_store(host: str, port: int, is_master: bool, loopback: bool, timeout_s: float):
    """A TCPStore; on a single node its server listens on 127.0.0.1 only.

    TCPStore's server binds every interface (`::`) whatever host it is given (torch 2.13, libuv and
    legacy backends alike), so a single-node run would accept connections from the network. Given
    a socket already bound to loopback (master_listen_fd), it listens there instead.
    """
    from datetime import timedelta

    from torch.distributed import TCPStore

    fd = None
    if is_master and loopback:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        port = sock.getsockname()[1]
        fd = sock.detach()  # the store owns the descriptor now and closes it
    return TCPStore(host, port, is_master=is_master, multi_tenant=True, master_listen_fd=fd,
                    timeout=timedelta(seconds=timeout_s))


def _arrival_key(run_id: str, node_rank: int) -> str:
    return f"hpcgpu/{run_id}/arrived/{node_rank}"


def _create_rdzv_handler(params):
    """torch elastic's c10d rendezvous, on a store made by _tcp_store, recording which nodes arrived."""
    from datetime import timedelta

    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(params.endpoint, default_port=29400)
    is_host = bool(params.get_as_bool("is_host", False))
    loopback = bool(params.get_as_bool("loopback", False))
    node_rank = params.get_as_int("node_rank", 0)
    join_s = params.get_as_int("join_timeout", 600)
    try:
        # the connect waits up to the join timeout (the head may start later than this node) ...
        store = _tcp_store(host, port, is_host, loopback, join_s)
    except (RuntimeError, ValueError, TimeoutError) as e:
        what = "could not listen on" if is_host else "could not reach the head node (node 0) at"
        raise RendezvousConnectionError(f"{what} {params.endpoint} within {join_s} s: {e}") from None
    store.set_timeout(timedelta(seconds=params.get_as_int("read_timeout", 60)))  # ... operations: torch's 60 s
    store.set(_arrival_key(params.run_id, node_rank), socket.gethostname())
    _rdzv.update(store=store, run_id=params.run_id)

    class Backend(C10dRendezvousBackend):  # torch checks the handler is named as registered
        name = RDZV_BACKEND

    handler = create_handler(store, Backend(store, params.run_id), params)
    if loopback:
        # the store the ranks share (MASTER_ADDR:MASTER_PORT) is made by the handler: keep it on loopback too
        handler._create_tcp_store_server = lambda addr, port: _tcp_store("127.0.0.1", port, True, True, 300)
    join = handler.next_rendezvous

    def next_rendezvous():
        # torch keeps the ranks' store across restarts, but the ranks assume a fresh one per attempt
        # (torch/distributed/rendezvous.py: "We create a new TCPStore for every retry"): with the old
        # one, restarted gloo ranks read the dead attempt's addresses and fail with "Connection refused".
        handler._shared_tcp_store_server = None
        handler._bootstrap_store_info = None
        return join()

    handler.next_rendezvous = next_rendezvous
    return handler


def _register_rendezvous() -> None:
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry

    rendezvous_handler_registry.register(RDZV_BACKEND, _create_rdzv_handler)  # idempotent for one creator


def describe_rdzv_failure(error: Exception, role: NodeRole, timeout_s: int) -> str:
    """Which nodes arrived and which did not, as far as the rendezvous store knows."""
    store = _rdzv.get("store")
    lines = [f"hpcgpu: rendezvous failed on node {role.node_rank}: {type(error).__name__}: {error}".rstrip(": ")]
    if store is not None:
        arrived = [i for i in range(role.nnodes) if _has_key(store, _arrival_key(_rdzv["run_id"], i))]
        missing = [i for i in range(role.nnodes) if i not in arrived]
        lines.append(f"  {len(arrived)} of {role.nnodes} node(s) arrived at {role.endpoint} within "
                     f"distributed.rdzv_timeout_s ({timeout_s} s); missing: "
                     + (", ".join(f"node {i}" for i in missing) or "none (they left again)"))
    lines.append("  hint: check that every node started (Slurm: the job's output of the missing node) and can "
                 f"reach {role.endpoint}; raise distributed.rdzv_timeout_s if nodes start far apart")
    return "\n".join(lines)


def _has_key(store, key: str) -> bool:
    try:
        return bool(store.check([key]))
    except Exception:  # the head went away: nothing to ask
        return False


# ---------------------------------------------------------------- the node agent


def _limit_failure_teardown() -> None:
    """Make torch elastic's teardown after a rank failure wait FAILURE_GRACE_S, not 30 s.

    Only the failure path calls PContext.close without a timeout (SubprocessContext._poll);
    stop signals go through the agent's shutdown with stop_grace_s, which is left alone.
    """
    from torch.distributed.elastic.multiprocessing.api import PContext

    original = PContext.close
    if getattr(original, "_hpcgpu", False):
        return

    def close(self, death_sig=None, timeout=FAILURE_GRACE_S):
        return original(self, death_sig, timeout)

    close._hpcgpu = True
    PContext.close = close


def _launch_config(spec, role: NodeRole, nproc: int, run_dir: Path):
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    single = role.nnodes == 1
    return LaunchConfig(
        min_nodes=role.nnodes,
        max_nodes=role.nnodes,
        nproc_per_node=nproc,
        run_id=role.run_id,
        role="hpcgpu",
        rdzv_endpoint=role.endpoint,
        rdzv_backend=RDZV_BACKEND,
        rdzv_configs={"join_timeout": spec.distributed.rdzv_timeout_s, "is_host": role.is_host,
                      "loopback": single, "node_rank": role.node_rank},
        # single node: the ranks reach the store at 127.0.0.1 (MASTER_ADDR), where it listens
        local_addr="127.0.0.1" if single else None,
        max_restarts=spec.distributed.max_restarts,
        monitor_interval=0.1,
        signals_to_handle=FORWARDED_SIGNALS,
        shutdown_timeout=spec.distributed.stop_grace_s,
        logs_specs=DefaultLogsSpecs(log_dir=str(run_dir / "logs" / "elastic")),
    )


def _restore_withheld_env(spec_env: Mapping[str, str], environ: dict) -> None:
    """Secret values are not written to the run dir (spec.yaml says <redacted>): take them from the
    environment, or from the `run local` process that wrote the spec (the same process)."""
    kept = withheld_env()
    for name, value in spec_env.items():
        if value != REDACTED or environ.get(name, REDACTED) != REDACTED:
            continue
        if name not in kept:
            raise UserError(
                f"env.{name} in the spec looks like a secret, and hpcgpu does not write secret values "
                "to the run directory, so this node cannot see it",
                hint=f"export {name} in the environment that starts the job (or the resumed run)",
            )
        environ[name] = os.environ[name] = kept[name]


def run_node(run_dir: Path, environ: Optional[Mapping[str, str]] = None) -> int:
    """Start this node's ranks and wait; return the exit status (see module docstring)."""
    environ = dict(os.environ if environ is None else environ)
    spec, _ = load_spec(run_dir / "spec.yaml")
    _restore_withheld_env(spec.env, environ)
    layout = node_layout(spec, count_visible_gpus(environ))
    role = node_role(spec.resources.nodes, run_dir.name, environ)
    added = rank_env(spec, str(run_dir), environ).added
    os.environ.update(added)
    os.environ[envnames.CONSOLE_TTY] = "1" if sys.stdout.isatty() else "0"
    if not Path(added[envnames.CKPT_DIR]).exists():
        make_private_dir(Path(added[envnames.CKPT_DIR]))  # checkpoints hold the model: owner only

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import elastic_launch

    _quiet_elastic_logs()
    _register_rendezvous()
    _limit_failure_teardown()

    started = time.time()
    follower = ConsoleFollower(run_dir, sys.stdout.buffer).start()
    try:
        elastic_launch(_launch_config(spec, role, layout.nproc, run_dir), sys.executable)("-m", "hpcgpu.worker")
        return exitcodes.OK
    except ChildFailedError as e:
        if all(f.exitcode == exitcodes.STOPPED_RESUMABLE for f in e.failures.values()):
            return exitcodes.STOPPED_RESUMABLE
        follower.stop()
        print(f"hpcgpu: training failed\n{describe_failure(e.failures, spec.distributed.timeout_s)}", file=sys.stderr)
        return exitcodes.FAILED
    except RendezvousError as e:
        follower.stop()
        print(describe_rdzv_failure(e, role, spec.distributed.rdzv_timeout_s), file=sys.stderr)
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
