"""The local backend: run the node agent on this machine, in-process or inside a container."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu.backends import LaunchHandle, RunStatus
from hpcgpu.backends.local.capacity import check_ranks_fit
from hpcgpu.backends.local.multinode import describe_node_part, node_request
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import PLAN_FILE, Plan
from hpcgpu.contract.procs import is_process, pid_alive, signal_process
from hpcgpu.contract.runfiles import elastic_restarts, read_json, read_result, write_result
from hpcgpu.contract.states import RunState, state_from_exit
from hpcgpu.host.facts import HostFacts
from hpcgpu.host.plan import agent_command, core_plan, describe_plan, with_parts
from hpcgpu.host.runs import RunRecord
from hpcgpu.host.spec import Spec

FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _run_in_container(plan: Plan, withheld: Mapping[str, str]) -> int:
    """Run prefix + node command as a child; forward our signals to it (its init passes them on)."""
    child = subprocess.Popen([*plan.container_prefix, *plan.node_argv], env={**os.environ, **withheld})
    previous = {s: signal.signal(s, lambda signum, _f: child.send_signal(signum)) for s in FORWARD}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def local_container_prefix(spec: Spec, facts: HostFacts, plan: Plan) -> tuple[str, ...]:
    """Prefix for a run on this machine: code dir = where hpcgpu started, this user, this machine's devices."""
    from hpcgpu.host.container import ContainerSettings, RunContext, container_prefix, local_container_name

    settings = ContainerSettings.from_spec(spec.container)
    if settings.runtime == "pyxis":
        # pyxis only exists as srun options: without this the run would silently start on the host
        raise UserError("container.runtime pyxis runs only under Slurm (it is an srun plugin)",
                        hint="hpcgpu submit slurm; for a local run use runtime: podman, docker or apptainer")
    ctx = RunContext(
        code_dir=facts.cwd, run_dir=plan.run_dir, ckpt_dir=plan.ckpt_dir,
        # the spec's env: too: a name the user's environment overrides is not in the plan's env
        # (hpcgpu never overrides the user), yet the container must still get the user's value
        env_names=(*plan.env, *spec.env), gpus=plan.gpus_per_node > 0, infiniband=facts.infiniband,
        uid=facts.uid, gid=facts.gid, name=local_container_name(plan.run_dir),
    )
    return tuple(container_prefix(settings, ctx, facts.environ))


#: held (flock) by the launcher of a local run for as long as it runs; holds the launcher's pid
LAUNCH_LOCK = ".launch.lock"


def hold_launch_lock(run_dir: str) -> int:
    """Take the run's launch lock for the life of this process, or raise UserError naming its holder:
    two launchers in one run dir would train twice into the same checkpoints. Returns the lock's fd
    (not inherited by the ranks or a container: Python opens files non-inheritable)."""
    import fcntl

    path = os.path.join(run_dir, LAUNCH_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        run_id = os.path.basename(os.path.normpath(run_dir))
        raise UserError(f"run {run_id} is still running here (launcher pid {holder}): a second launch would "
                        "train into the same run directory", hint=f"wait for it, or stop it first: hpcgpu cancel {run_id}")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def launch_lock_free(run_dir: str) -> None:
    """Raise UserError when another launcher holds the run's launch lock (a check: nothing is kept)."""
    os.close(hold_launch_lock(run_dir))


class LocalBackend:
    """Runs on this machine and waits; `cancel` signals the launching process."""

    name = "local"

    def plan(self, spec: Spec, facts: HostFacts, *, run_id: str, run_dir: str, created: float = 0.0) -> Plan:
        plan = core_plan(spec, facts, backend=self.name, run_id=run_id, run_dir=run_dir,
                         visible_gpus=facts.visible_gpus, created=created)
        check_ranks_fit(plan.nproc_per_node, plan.device_type, facts)
        if plan.nodes > 1:  # this node's part of a run over several nodes (backends/local/multinode.py)
            previous = read_json(Path(run_dir) / PLAN_FILE) or {}  # a resume: where this node sat
            plan = with_parts(plan, request=node_request(plan.nodes, facts.environ, previous.get("request")))
        if spec.container is None:
            return plan
        return with_parts(plan, node_argv=agent_command("python3", run_dir),
                          container_prefix=local_container_prefix(spec, facts, plan))

    def preflight(self, plan: Plan, *, resuming: Optional[RunRecord] = None) -> None:
        """A missing runtime or image, this run's container still running, or (resuming) this run's
        launcher still running: say so before anything starts."""
        if resuming is not None:
            launch_lock_free(plan.run_dir)
        container = plan.spec.get("container")
        if container:
            from hpcgpu.host.container import check_runtime, local_container_name

            check_runtime(container["runtime"], container["image"], container_name=local_container_name(plan.run_dir))

    def launch(self, plan: Plan, withheld: Mapping[str, str]) -> LaunchHandle:
        """Run to completion, holding the run's launch lock; the handle carries the node agent's exit status."""
        hold_launch_lock(plan.run_dir)  # released when this process exits, however it exits
        if plan.container_prefix:
            started = time.time()
            code = _run_in_container(plan, withheld)
            recorded = read_result(Path(plan.run_dir), since=started)
            if recorded is not None:
                # the agent inside said how the run ended; a signal that reached the container while
                # it was being torn down afterwards does not change that
                code = recorded["exit_code"]
            else:
                code = 128 - code if code < 0 else code  # killed by a signal: as a shell reports it
                write_result(Path(plan.run_dir), code)  # the container ended before its agent could say how
        else:
            from hpcgpu.agent.node import run_node  # imports torch: only now, never for --help

            code = run_node(plan, withheld=withheld)
            if plan.request.get("node_rank"):
                # another node than node 0 of `--nnodes`: its own run dir, where node 0's agent never writes
                write_result(Path(plan.run_dir), code)
        return LaunchHandle(run_id=plan.run_id, exit_code=code)

    def status(self, record: RunRecord) -> RunStatus:
        """From result.json; else from the launcher: the process recorded as (pid, start time)
        running is RUNNING, gone is LOST (a reused pid is another process, never this run)."""
        run_dir = Path(record.run_dir)
        # restarts: each --resume (run.json) and each restart of the ranks after a failure
        restarts = int((read_json(run_dir / "run.json") or {}).get("restarts") or 0) + elastic_restarts(run_dir)
        result = read_result(run_dir)
        if result is not None:
            return RunStatus(state_from_exit(result["exit_code"]), restarts=restarts)
        if record.host != os.uname().nodename:
            return RunStatus(RunState.UNKNOWN, reason=f"launched on {record.host}: ask there")
        if record.pid_start is None and record.pid and pid_alive(record.pid):
            # run.json from an hpcgpu that did not record start times
            return RunStatus(RunState.UNKNOWN, reason=f"launcher pid {record.pid} cannot be told from a "
                             "process that reused its pid")
        if record.pid and is_process(record.pid, record.pid_start):
            return RunStatus(RunState.RUNNING, restarts=restarts)
        return RunStatus(RunState.LOST, restarts=restarts, reason=f"its launcher (pid {record.pid}) ended without recording how "
                         "the run ended (killed with SIGKILL, or the machine restarted)")

    def describe(self, plan: Plan) -> str:
        if plan.nodes == 1:
            return describe_plan(plan)
        return describe_plan(plan) + "\n" + describe_node_part(plan)

    def cancel(self, record: RunRecord) -> None:
        """SIGTERM the launcher: ranks checkpoint and stop (exit 75). An ended run is left alone, and
        so is whatever process now has its launcher's pid."""
        if record.host != os.uname().nodename:
            raise UserError(f"run {record.id} runs on {record.host}; cancel it there")
        state = self.status(record)
        if state.state is not RunState.RUNNING:
            why = f": {state.reason}" if state.reason else ""
            raise UserError(f"run {record.id} is not running ({state.state}{why}); nothing was signalled")
        if not signal_process(record.pid, record.pid_start, signal.SIGTERM):
            raise UserError(f"run {record.id} ended just now; nothing was signalled")
