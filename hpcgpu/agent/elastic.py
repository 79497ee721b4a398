"""Every adjustment hpcgpu makes to torch elastic, in one place, each guarded by a feature check.

torch elastic is the agent's engine (what torchrun runs). hpcgpu needs seven things it does not do:
forward Slurm's USR1/USR2, wait less than 30 s for survivors after a rank failure, treat a group
that stopped cleanly (exit 75) as final under max_restarts, keep stores on the address they are for,
give restarted ranks a fresh store, number the nodes by node rank, and end (or restart) an attempt
whose ranks the hang watchdog found hung. The public knobs are used where they exist (LaunchConfig
fields, environment variables); the rest patches private internals, so each patch checks that
what it replaces exists and otherwise warns once and leaves torch as it is
(tests/agent/test_agent_elastic.py pins each one against the installed torch).
Imports torch lazily: only the node agent calls these.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, Callable, Optional

from hpcgpu.contract import exitcodes

# torch elastic only handles TERM/INT/HUP/QUIT by default; Slurm warns with USR1/USR2
# before the time limit or preemption (pytorch/pytorch#154849).
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
#: after a rank failed, how long the others get to exit on SIGTERM before SIGKILL. torch elastic
#: waits a fixed 30 s here; with a peer gone they cannot checkpoint anyway, and a rank stuck
#: outside a collective would hold the failure report (and any restart) for all of it.
FAILURE_GRACE_S = 5

_warned: set[str] = set()


def warn_once(what: str, lost: str) -> None:
    """One line on stderr: which adjustment this torch cannot take, and what the run loses."""
    if what not in _warned:
        _warned.add(what)
        import torch

        print(f"hpcgpu: warning: torch {torch.__version__} has no {what}; {lost}", file=sys.stderr, flush=True)


def quiet_elastic_logs() -> None:
    """hpcgpu prints its own summary of failures and signals; elastic's lines would repeat it less clearly.
    Its loggers set their own levels (torch/distributed/elastic/utils/logging.py), so set each one."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic") or name.startswith("torch.distributed.launcher"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def launch_config(environ: dict, **fields: Any):
    """torch's LaunchConfig with hpcgpu's signals and stop grace: as fields where this torch has them
    (2.8+), else through the environment variables older versions read, else without (warned)."""
    from torch.distributed.launcher.api import LaunchConfig

    known = {f.name for f in dataclasses.fields(LaunchConfig)}
    grace = fields.pop("shutdown_timeout")
    if "signals_to_handle" in known:
        fields["signals_to_handle"] = FORWARDED_SIGNALS
    else:
        environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = FORWARDED_SIGNALS
        warn_once("LaunchConfig.signals_to_handle",
                  "SIGUSR1/SIGUSR2 (Slurm's warning signals) reach the ranks only if this torch reads "
                  "TORCHELASTIC_SIGNALS_TO_HANDLE (SIGTERM always does)")
    if "shutdown_timeout" in known:
        fields["shutdown_timeout"] = grace
    else:
        environ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(grace)
    return LaunchConfig(**{k: v for k, v in fields.items() if k in known})


def _patch(owner: Any, attr: str, make: Callable[[Any], Any], what: str, lost: str) -> None:
    """Replace owner.attr by make(original) once; warn instead when this torch has no such attr."""
    original = getattr(owner, attr, None)
    if original is None:
        warn_once(what, lost)
        return
    if getattr(original, "_hpcgpu", False):
        return
    patched = make(original)
    patched._hpcgpu = True
    setattr(owner, attr, patched)


def limit_failure_teardown() -> None:
    """Make torch elastic's teardown after a rank failure wait FAILURE_GRACE_S, not 30 s.

    Only the failure path calls PContext.close without a timeout (SubprocessContext._poll);
    stop signals go through the agent's shutdown with stop_grace_s, which is left alone.
    """
    from torch.distributed.elastic.multiprocessing.api import PContext

    def make(original):
        def close(self, death_sig=None, timeout=FAILURE_GRACE_S):
            return original(self, death_sig, timeout)
        return close

    _patch(PContext, "close", make, "PContext.close",
           "after a rank failure the others get torch's 30 s to exit")


def make_clean_stops_final() -> None:
    """A clean stop (every rank that exited said 75: checkpointed on a signal) ends the run even with
    distributed.max_restarts > 0. torch elastic counts any non-zero exit as a failure to restart from,
    so a signal that reached the ranks but not this agent (kill -TERM of a rank, a signal sent to the
    ranks' process group) would resume and train on instead of stopping."""
    from torch.distributed.elastic.agent.server.api import WorkerState
    from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent

    def make(original):
        def monitor(self, worker_group):
            result = original(self, worker_group)
            if result.state == WorkerState.HEALTHY:
                result = _hung_result(self, worker_group) or result
            if result.state == WorkerState.FAILED and exitcodes.ranks_stopped_cleanly(
                    f.exitcode for f in result.failures.values()):
                self._remaining_restarts = 0
            elif result.state in (WorkerState.FAILED, WorkerState.UNHEALTHY) and self._remaining_restarts > 0:
                # torch elastic restarts the ranks next; it would say so only in its own (quieted) log
                most = worker_group.spec.max_restarts
                _on_restart(result.failures, most - self._remaining_restarts + 1, most + 1)
            return result
        return monitor

    _patch(LocalElasticAgent, "_monitor_workers", make, "LocalElasticAgent._monitor_workers",
           "with distributed.max_restarts > 0 a stop that reached only the ranks restarts them")


def fork_ranks_from_the_zygote() -> None:
    """Start ranks by forking the preloaded process where it fits them (agent/zygote.py): torch
    elastic's handler factory, asked first. A torch without the factory starts fresh interpreters,
    which costs only time, so it is not warned about."""
    from torch.distributed.elastic.multiprocessing import api

    original = getattr(api, "get_subprocess_handler", None)
    if original is None or getattr(original, "_hpcgpu", False):
        return

    def get_subprocess_handler(*args, **kwargs):
        from hpcgpu.agent import zygote

        if not args and not kwargs.get("numa_options") and {"entrypoint", "args", "env"} <= set(kwargs):
            forked = zygote.handler_for(kwargs["entrypoint"], kwargs["args"], kwargs["env"],
                                        kwargs.get("stdout"), kwargs.get("stderr"), kwargs.get("local_rank_id", 0))
            if forked is not None:
                return forked
        return original(*args, **kwargs)

    get_subprocess_handler._hpcgpu = True
    api.get_subprocess_handler = get_subprocess_handler


def _hung_result(agent: Any, worker_group: Any):
    """The watchdog's verdict as torch elastic's: a failed attempt (restarted under max_restarts),
    the hung ranks of this node failing with exitcodes.HUNG (all of them when the rank behind is on
    another node); None while the ranks make progress.

    The ranks are killed here, at once: none can save (the healthy ones wait in a collective with
    the one behind) and a SIGTERM would only wait out torch's 30 s before its SIGKILL."""
    if _watch is None:
        return None
    workers = worker_group.workers
    hung = _watch([(w.local_rank, w.global_rank, w.id) for w in workers])
    if hung is None:
        return None
    import signal

    from torch.distributed.elastic.agent.server.api import RunResult, WorkerState
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    pcontext = getattr(agent, "_pcontext", None)
    if pcontext is not None:
        pcontext.close(signal.SIGKILL, FAILURE_GRACE_S)

    named = [w for w in workers if w.global_rank in hung] or list(workers)
    return RunResult(state=WorkerState.FAILED, failures={
        w.global_rank: ProcessFailure(local_rank=w.local_rank, pid=w.id, exitcode=exitcodes.HUNG, error_file="")
        for w in named})


#: called with the (local rank, global rank, pid) of each running rank at every monitor pass; returns
#: None while the ranks make progress, else the global ranks found hung (agent/watchdog.py)
_watch: Optional[Callable[[list], Optional[list[int]]]] = None

#: called as (failures, failed attempt, attempts in all) before torch elastic restarts the ranks;
#: the node agent sets it per run (adjust_torch_elastic), the patched monitor reads it
_on_restart: Callable[[dict, int, int], None] = lambda failures, attempt, attempts: None


def bind_rank_store(handler: Any, make_store: Callable[[str, int], Any]) -> None:
    """The store the ranks share (MASTER_ADDR:MASTER_PORT) is made by the rendezvous handler: make it
    with make_store (listening on 127.0.0.1 only for one node, on the head's address for several)."""
    if not hasattr(handler, "_create_tcp_store_server"):
        warn_once("DynamicRendezvousHandler._create_tcp_store_server",
                  "the ranks' store listens on every interface")
        return
    handler._create_tcp_store_server = make_store


def fresh_rank_store_per_attempt(handler: Any) -> None:
    """torch keeps the ranks' store across restarts, but the ranks assume a fresh one per attempt
    (torch/distributed/rendezvous.py: "We create a new TCPStore for every retry"): with the old
    one, restarted gloo ranks read the dead attempt's addresses and fail with "Connection refused"."""
    if not all(hasattr(handler, a) for a in ("_shared_tcp_store_server", "_bootstrap_store_info")):
        return  # torch versions without the shared store create one per attempt themselves
    join = handler.next_rendezvous

    def next_rendezvous():
        handler._shared_tcp_store_server = None
        handler._bootstrap_store_info = None
        return join()

    handler.next_rendezvous = next_rendezvous


def order_nodes_by_rank(handler: Any, node_rank: int) -> None:
    """Make the rendezvous number the nodes by their node rank (node R runs ranks R*nproc ...), as
    the plan's rank table says. torch sorts the participants by (address, pid): rank 0 would land
    on whichever node's address sorts first ("10.0.0.10" before "10.0.0.9"), away from the head that
    writes result.json, and with its checkpoints on that node's disk."""
    node = getattr(handler, "_this_node", None)
    executor = getattr(handler, "_op_executor", None)
    if node is None or getattr(executor, "_node", None) is not node or not hasattr(node, "local_id"):
        warn_once("DynamicRendezvousHandler._this_node/_op_executor._node",
                  "global ranks follow torch's order of the nodes (by address), not the node ranks")
        return
    ranked = ranked_node_class()(node.addr, node.pid, node.local_id, node_rank)
    handler._this_node = executor._node = ranked


_ranked_node: Optional[type] = None


def ranked_node_class() -> type:
    """torch's node descriptor with the node rank in front of its sort order (made on first use:
    torch is imported lazily; pickle finds it as hpcgpu.agent.elastic._RankedNode on every node)."""
    global _ranked_node
    if _ranked_node is None:
        from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc

        def key(n):
            return (getattr(n, "node_rank", 0), n.addr, n.pid, n.local_id)

        @dataclasses.dataclass(eq=True, frozen=True, repr=False)
        class _RankedNode(_NodeDesc):
            node_rank: int = 0

            def __lt__(self, other):
                return key(self) < key(other)

            def __gt__(self, other):
                return key(self) > key(other)

            def __le__(self, other):
                return key(self) <= key(other)

            def __ge__(self, other):
                return key(self) >= key(other)

        _RankedNode.__module__, _RankedNode.__qualname__ = __name__, "_RankedNode"
        _ranked_node = _RankedNode
    return _ranked_node


def __getattr__(name: str) -> Any:
    if name == "_RankedNode":  # unpickling the rendezvous state on a node that has not made it yet
        return ranked_node_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def adjust_torch_elastic(on_restart: Optional[Callable[[dict, int, int], None]] = None,
                         watch: Optional[Callable[[list], Optional[list[int]]]] = None) -> None:
    """Everything above that applies process-wide (the rendezvous parts apply per handler);
    on_restart reports a failed attempt that torch elastic is about to restart; watch is the hang
    watchdog's check (none: the ranks are not watched)."""
    global _on_restart, _watch
    if on_restart is not None:
        _on_restart = on_restart
    _watch = watch
    quiet_elastic_logs()
    limit_failure_teardown()
    make_clean_stops_final()
    fork_ranks_from_the_zygote()
