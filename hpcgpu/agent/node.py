"""`hpcgpu train --plan plan.json`: the node agent. The same code on a laptop, in a container and on a Slurm node.

It executes the plan: it asks the plan's backend where this node sits (node rank, head address,
restart count: the only facts it adds), puts the plan's environment in place, starts this node's
ranks through torch elastic's agent (in-process, c10d rendezvous), forwards
SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 to them, reads their output into the rank logs and onto
its console (agent/ranklogs.py: logging.console), and turns the ranks'
outcome into one exit status: 0 done, 1 failed (naming the rank and its traceback), 75 stopped
cleanly and resumable. Node 0 records it in result.json. Reads plan.json with the standard
library only; imports torch lazily, inside run_node; never imports the host layer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu.agent import zygote
from hpcgpu.agent.agreement import shared_view
from hpcgpu.backends import node_facts
from hpcgpu.contract import envnames, exitcodes
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.netaddr import NodeAddress, ifname_defaults, node_address
from hpcgpu.contract.node import NodeFacts
from hpcgpu.contract.plan import REDACTED, Plan
from hpcgpu.contract.runfiles import count_elastic_restart, make_private_dir, write_result


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


def ranks_done(run_dir: Path, since: float, ranks: range) -> bool:
    """Whether every one of these ranks wrote its "done" marker during this attempt: the training
    finished, and a stop signal that reached the agent while the ranks were exiting changes nothing."""
    for rank in ranks:
        path = run_dir / "exit" / f"rank{rank}.json"
        try:
            if path.stat().st_mtime < since or json.loads(path.read_text()).get("status") != "done":
                return False
        except (OSError, ValueError):
            return False
    return True


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


def rank_environment(plan: Plan, environ: Mapping[str, str], withheld: Mapping[str, str]) -> dict[str, str]:
    """The plan's variables for the ranks, secret values taken from withheld or this node's environment
    (plan.json says REDACTED: hpcgpu never writes them)."""
    out = {}
    for name, value in plan.env.items():
        if value == REDACTED:
            if name in withheld:
                value = withheld[name]
            elif environ.get(name, REDACTED) != REDACTED:
                value = environ[name]
            else:
                raise UserError(
                    f"env.{name} in the spec looks like a secret, and hpcgpu does not write secret values "
                    "to the run directory, so this node cannot see it",
                    hint=f"export {name} in the environment that starts the job (or the resumed run)",
                )
        out[name] = value
    return out


def console_mode(plan: Plan) -> str:
    """logging.console of the plan (plans written before it existed: rank0)."""
    return plan.spec.get("logging", {}).get("console", "rank0")


def _launch_config(plan: Plan, node: NodeFacts, environ: dict, rank_logs, address: Optional[NodeAddress] = None):
    from hpcgpu.agent.elastic import launch_config
    from hpcgpu.agent.ranklogs import logs_specs
    from hpcgpu.agent.rendezvous import RDZV_BACKEND

    dist = plan.spec["distributed"]
    single = node.nnodes == 1
    return launch_config(
        environ,
        min_nodes=node.nnodes,
        max_nodes=node.nnodes,
        nproc_per_node=plan.nproc_per_node,
        run_id=node.rdzv_id,
        role="hpcgpu",
        rdzv_endpoint=node.endpoint,
        rdzv_backend=RDZV_BACKEND,
        rdzv_configs={"join_timeout": dist["rdzv_timeout_s"], "is_host": node.is_head,
                      "loopback": single, "node_rank": node.node_rank,
                      "bind": address.addr if address and address.addr else "",
                      **({} if single else {"plan": json.dumps(shared_view(plan), sort_keys=True)})},
        # single node: the ranks reach the store at 127.0.0.1 (MASTER_ADDR), where it listens; several:
        # the address that routes to the endpoint (never the host name's: see contract/netaddr.py)
        local_addr="127.0.0.1" if single else (address.addr if address else None),
        max_restarts=dist["max_restarts"],
        monitor_interval=0.1,
        shutdown_timeout=dist["stop_grace_s"],
        logs_specs=logs_specs(rank_logs, str(Path(plan.run_dir) / "logs" / "elastic")),
    )


def run_node(plan: Plan, environ: Optional[Mapping[str, str]] = None,
             withheld: Optional[Mapping[str, str]] = None) -> int:
    """Start this node's ranks and wait; return the exit status (node 0 also writes result.json)."""
    environ = dict(os.environ if environ is None else environ)
    node = node_facts(plan, environ)
    added = rank_environment(plan, environ, withheld or {})
    added[envnames.JOB_RESTARTS] = str(node.restarts)
    console = console_mode(plan)
    # a bar only where someone sees it: on a terminal that shows rank 0
    added[envnames.CONSOLE_TTY] = "1" if sys.stdout.isatty() and console != "none" else "0"
    added[envnames.RANK_OUTPUT] = "agent"
    added.update(torch_defaults_kept({**environ, **added}))
    address = None
    if node.nnodes > 1:
        address, net = network_environment(node, {**os.environ, **added})
        added.update(net)
    os.environ.update(added)
    # the ranks' imports start now, beside the agent's own and its rendezvous (agent/zygote.py)
    zygote.start(rank_command(plan), os.environ)
    try:
        ckpt_dir = Path(plan.ckpt_dir)
        if not ckpt_dir.exists():
            make_private_dir(ckpt_dir)  # checkpoints hold the model: owner only
        code = _run_ranks(plan, node, address)
    finally:
        zygote.stop()
    if node.is_head:
        write_result(Path(plan.run_dir), code)  # status after the scheduler forgot the job
    return code


#: torch's own default for TORCH_NCCL_ASYNC_ERROR_HANDLING since 2.2: tear a failed rank down without
#: the communicator abort, which can itself hang (https://github.com/pytorch/pytorch/issues/110723)
TORCH_ASYNC_ERROR_HANDLING_DEFAULT = "3"


def torch_defaults_kept(environ: Mapping[str, str]) -> dict[str, str]:
    """What the ranks need so torch's own defaults hold under torch elastic: its LocalElasticAgent gives
    every rank TORCH_NCCL_ASYNC_ERROR_HANDLING=1 unless the variable is set, overriding torch's 3 (see
    above). A value the user set (environment or spec) stays."""
    if "TORCH_NCCL_ASYNC_ERROR_HANDLING" in environ:
        return {}
    return {"TORCH_NCCL_ASYNC_ERROR_HANDLING": TORCH_ASYNC_ERROR_HANDLING_DEFAULT}


def network_environment(node: NodeFacts, environ: Mapping[str, str]) -> tuple[NodeAddress, dict[str, str]]:
    """Several nodes: this node's address toward the rendezvous endpoint and its interface, as
    GLOO_SOCKET_IFNAME/NCCL_SOCKET_IFNAME for the ranks (unless set), and why (said on stderr and in
    HPCGPU_NETWORK, which each rank's log repeats)."""
    address = node_address(node.endpoint)
    if node.is_head and not address.is_endpoint_here():
        raise UserError(f"node 0 must run on the node at the rendezvous endpoint {node.endpoint}, but "
                        f"{address.endpoint_addr} is not an address of this node (it reaches it from {address.addr})",
                        hint="start --node-rank 0 on the machine that holds that address, or point "
                             "--rdzv-endpoint at this one")
    added, notes = ifname_defaults(address, environ)
    why = f"node {node.node_rank} network: {address.reason}" + (
        f"; {', '.join(notes)}" if notes else "")
    print(f"hpcgpu: {why}", file=sys.stderr, flush=True)
    added[envnames.NETWORK] = why
    return address, added


def rank_command(plan: Plan) -> tuple[str, ...]:
    """Every rank's command line: the worker, then the user's entry for `ps` (entry_words)."""
    return (sys.executable, "-m", "hpcgpu.worker", *entry_words(plan.spec["entry"]))


def entry_words(entry: dict) -> tuple[str, ...]:
    """What a rank's command line shows after `python -m hpcgpu.worker`: the user's script or module
    and its arguments, so `ps`, `pgrep -f train.py` and py-spy find the rank as under torchrun. The
    worker ignores them: it runs the entry of the plan."""
    target = entry.get("script") or (("-m", entry["module"]) if entry.get("module") else entry.get("task"))
    if not target:
        return ()
    return (*((target,) if isinstance(target, str) else target), *entry.get("args", []))


def make_watchdog(plan: Plan, node: NodeFacts):
    """This node's hang watchdog (watchdog.stall_s > 0), its heartbeat file named to the ranks; None when off."""
    from hpcgpu.agent.watchdog import Watchdog, store_peers

    stall_s = plan.spec.get("watchdog", {}).get("stall_s", 0)  # plans written before it existed: off
    if not stall_s:
        return None
    peers = store_peers(node) if node.nnodes > 1 else None
    watchdog = Watchdog(Path(plan.run_dir), stall_s, plan.nproc_per_node, node.node_rank, node.host,
                        peers=peers, is_head=node.is_head)
    os.environ.update(watchdog.environment)
    old_name_only = flight_recorder_env(os.environ)
    if old_name_only:
        os.environ.update(old_name_only)
    return watchdog


def flight_recorder_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The flight recorder's size under the name this torch reads: before torch 2.8 only NCCL had one,
    sized by TORCH_NCCL_TRACE_BUFFER_SIZE (torch 2.8+ reads TORCH_FR_BUFFER_SIZE, and warns about
    the old name)."""
    from torch._C import _distributed_c10d as c10d

    size = environ.get("TORCH_FR_BUFFER_SIZE")
    if not size or hasattr(c10d, "_dump_fr_trace_json") or "TORCH_NCCL_TRACE_BUFFER_SIZE" in environ:
        return {}
    return {"TORCH_NCCL_TRACE_BUFFER_SIZE": size}


def _run_ranks(plan: Plan, node: NodeFacts, address: Optional[NodeAddress] = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import elastic_launch

    from hpcgpu.agent.elastic import adjust_torch_elastic
    from hpcgpu.agent.failure import describe_failure
    from hpcgpu.agent.watchdog import console_summary
    from hpcgpu.agent.ranklogs import RankLogs
    from hpcgpu.agent.rendezvous import describe_rdzv_failure, leave, register_rendezvous

    run_dir = Path(plan.run_dir)
    dist = plan.spec["distributed"]
    rank_logs = RankLogs(run_dir, console_mode(plan))
    where = f"node {node.node_rank} ({node.host})"

    def failure(failures: dict) -> str:
        return describe_failure(failures, dist["timeout_s"], run_dir, node=where, stderr_tail=rank_logs.stderr_tail)

    watchdog = make_watchdog(plan, node)

    def hang() -> Optional[str]:
        """The hang found in the attempt that just ended (said once), else None."""
        report, watchdog.report = watchdog.report, None
        return console_summary(report, watchdog.md_path) if report else None

    def on_restart(failures: dict, attempt: int, attempts: int) -> None:
        """Say which rank failed and how, that the ranks restart, and count it for `status`."""
        rank_logs.settle()  # the failed rank's last lines, before the report that quotes them
        said = (hang() if watchdog else None) or failure(failures)
        print(f"hpcgpu: attempt {attempt} of {attempts} failed:\n{said}\n"
              f"hpcgpu: restarting the ranks (attempt {attempt + 1} of {attempts}, distributed.max_restarts="
              f"{attempts - 1}); they resume from the newest checkpoint", file=sys.stderr, flush=True)
        if node.is_head:
            count_elastic_restart(run_dir)

    adjust_torch_elastic(on_restart, watchdog.check if watchdog else None)
    register_rendezvous()
    config = _launch_config(plan, node, os.environ, rank_logs, address)  # type: ignore[arg-type]
    started = time.time()
    mine = range(node.node_rank * plan.nproc_per_node, (node.node_rank + 1) * plan.nproc_per_node)
    try:
        command = rank_command(plan)
        elastic_launch(config, command[0])(*command[1:])
        return exitcodes.OK
    except ChildFailedError as e:
        if exitcodes.ranks_stopped_cleanly(f.exitcode for f in e.failures.values()):
            return exitcodes.STOPPED_RESUMABLE
        rank_logs.close()  # the ranks' last lines first, then the report
        said = hang() if watchdog else None
        if said:
            print(f"{said}\nhpcgpu: the ranks were stopped; nothing was saved since the last checkpoint (the "
                  "others wait in a collective with the rank behind, so they cannot save); a resume continues "
                  "from it", file=sys.stderr)
            return exitcodes.HUNG
        print(f"hpcgpu: training failed\n{failure(e.failures)}", file=sys.stderr)
        return exitcodes.FAILED
    except RendezvousError as e:
        rank_logs.close()
        print(describe_rdzv_failure(e, node, dist["rdzv_timeout_s"]), file=sys.stderr)
        return exitcodes.FAILED
    except SignalException as e:
        rank_logs.close()
        if ranks_done(run_dir, started, mine):
            return exitcodes.OK  # the signal came after the training had finished
        # The ranks got the signal and stop_grace_s to save; those that saved left a marker.
        if _stopped_markers(run_dir, started):
            return exitcodes.STOPPED_RESUMABLE
        # Still starting, or no save within the grace: not a failure, and nothing a resume cannot
        # redo from the previous checkpoint (a Slurm node requeues on it; status says INTERRUPTED).
        print(f"hpcgpu: stopped by {e.sigval.name} before the ranks could checkpoint (they were still "
              f"starting, or did not save within distributed.stop_grace_s={dist['stop_grace_s']}s); "
              "a resume continues from the previous checkpoint", file=sys.stderr)
        return 128 + int(e.sigval)
    except KeyboardInterrupt:
        _kill_children()
        return exitcodes.OK if ranks_done(run_dir, started, mine) else 130
    finally:
        rank_logs.close()
        if watchdog:
            watchdog.close()
        leave(node)
