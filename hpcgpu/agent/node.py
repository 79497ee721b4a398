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
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu.contract import envnames, exitcodes
from hpcgpu.contract.console import ConsoleFollower
from hpcgpu.contract.errors import UserError
from hpcgpu.host.envvars import REDACTED, withheld_env
from hpcgpu.contract.gpus import count_visible_gpus
from hpcgpu.host.plan import node_layout, rank_env
from hpcgpu.agent.rendezvous import RDZV_BACKEND, NodeRole, describe_rdzv_failure, node_role, register_rendezvous
from hpcgpu.host.runs import make_private_dir
from hpcgpu.host.spec import load_spec

# torch elastic only handles TERM/INT/HUP/QUIT by default; Slurm warns with USR1/USR2
# before the time limit or preemption (pytorch/pytorch#154849).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
#: after a rank failed, how long the others get to exit on SIGTERM before SIGKILL. torch elastic
#: waits a fixed 30 s here; with a peer gone they cannot checkpoint anyway, and a rank stuck
#: outside a collective would hold the failure report (and any restart) for all of it.
FAILURE_GRACE_S = 5


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


def _make_clean_stops_final() -> None:
    """A clean stop (every rank that exited said 75: checkpointed on a signal) ends the run even with
    distributed.max_restarts > 0. torch elastic counts any non-zero exit as a failure to restart from,
    so a signal that reached the ranks but not this agent (kill -TERM of a rank, a signal sent to the
    ranks' process group) would resume and train on instead of stopping."""
    from torch.distributed.elastic.agent.server.api import WorkerState
    from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent

    original = LocalElasticAgent._monitor_workers
    if getattr(original, "_hpcgpu", False):
        return

    def monitor(self, worker_group):
        result = original(self, worker_group)
        if result.state == WorkerState.FAILED and result.failures and all(
                f.exitcode == exitcodes.STOPPED_RESUMABLE for f in result.failures.values()):
            self._remaining_restarts = 0
        return result

    monitor._hpcgpu = True
    LocalElasticAgent._monitor_workers = monitor


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
    register_rendezvous()
    _limit_failure_teardown()
    _make_clean_stops_final()

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
