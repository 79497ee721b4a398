"""What submitit runs on each Slurm node: one command per node, with rendezvous and requeue.

``NodeCommand`` is a torch-free, picklable callable. Submit it with submitit, one task per node
(``nodes=N, tasks_per_node=1``); on each node it runs ``argv`` (the node agent, ``hpcgpu train``,
maybe behind a container prefix) as a child process and turns the child's exit into the task's::

    ex = submitit.SlurmExecutor(folder=run_dir / "submitit", max_num_timeout=3)
    ex.update_parameters(nodes=2, ntasks_per_node=1, time=60, signal_delay_s=120,
                         srun_args=["--kill-on-bad-exit=1"], additional_parameters={"requeue": True})
    job = ex.submit(NodeCommand(["hpcgpu", "train"], env={"HPCGPU_RUN_DIR": str(run_dir)},
                                rdzv_dir=run_dir / "rdzv", grace_s=90))

Constructor: ``argv`` list of str, run without a shell; ``env`` added to the task's environment;
``rdzv_dir`` a directory every node sees, unique to the run; ``grace_s`` how long the child may
take to checkpoint and exit after the stop signal (keep it below ``signal_delay_s`` - 15 s);
``rdzv_timeout_s`` how long other nodes wait for node 0's endpoint; ``forward_signal`` None =
forward the stop signal only outside a Slurm job step (inside one, Slurm already signals every
process of the step, the child included); ``requeues`` the restart counter (set by requeues).

The child sees the task's environment (SLURM_*, SUBMITIT_*), then ``env``, then
``HPCGPU_RDZV_ENDPOINT=host:port``: a port that was free on node 0, whose host is the first of
``scontrol show hostnames $SLURM_JOB_NODELIST`` (the same value on every node), and
``HPCGPU_JOB_RESTARTS``: max(requeues done through checkpoint(), SLURM_RESTART_COUNT) (node.job_restarts).
Files in rdzv_dir, one set per attempt: ``<jobid>-<restart>.endpoint`` (host:port, written by
node 0 with tmp + rename) and ``<jobid>-<restart>.head`` ("requeued" or "ended", node 0's exit).

Outcome on each node: child exit 0 -> returns {node, host, returncode, restarts}. Exit 75
(exitcodes.STOPPED_RESUMABLE), death by the stop signal or 128 + the stop signal (the node agent
stopped before its ranks could checkpoint: a stop during start-up), after the stop signal -> node 0's
``checkpoint()`` (called by submitit's handler) returns a DelayedSubmission of the next attempt and
submitit runs ``scontrol requeue`` and exits; other nodes wait for that (bounded) and exit 75,
writing no result. The same exit without submitit's requeue (SIGTERM preemption, scancel, no
submitit) -> exit 75, no result. Exit 76 (exitcodes.HUNG: the node agents' watchdog found the ranks
hung and node 0 wrote a hang report) -> node 0 requeues the job without the node(s) of the rank
behind, within ``hang_requeues`` (node_hangs.py), and exits 76; when it may not, NodeCommandError
with the reason; other nodes wait for node 0's marker and exit 76. Any other exit ->
NodeCommandError: the job fails, no requeue. So the job's outcome is task 0's result; other tasks
may have none.

submitit 1.5.x (core/job_environment.py), as measured on the dev cluster: its handler for USR2
(SUBMITIT_PREEMPT_SIGNAL) runs on every task, but only global rank 0 calls checkpoint() and
requeues. It calls the signal a *timeout* when the task has run min(0.8 T, T - 10 min) of its
limit T (``time``/``timeout_min``), so with T <= 10 min every signal is a timeout; timeouts use
up ``max_num_timeout`` (then the job fails "timed-out too many times"), preemptions do not.
SIGTERM is only logged ("Bypassing signal SIGTERM"). ``scontrol requeue`` needs --requeue (or
JobRequeue=1). A requeued job may start again after AuthInfo cred_expire (120 s default, 10 s on
the dev cluster); forcing StartTime=now in the same second fails it ("Job credential revoked").
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from hpcgpu.backends.slurm.node import job_key, job_restarts
from hpcgpu.backends.slurm.node_hangs import decide, load_reports, partition_nodes, record_exclusion, requeue_without
from hpcgpu.contract.envnames import JOB_RESTARTS, RDZV_ENDPOINT
from hpcgpu.contract.ports import free_port, publish_endpoint, wait_file
from hpcgpu.contract.exitcodes import HUNG, STOPPED_RESUMABLE
from hpcgpu.contract.runfiles import load_excluded



class NodeCommandError(RuntimeError):
    """The node's command failed; the job is not requeued."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode


class _ChildExited(BaseException):
    """Raised out of checkpoint() when the child ended in a way that must not requeue."""

    def __init__(self, returncode: int):
        super().__init__(returncode)
        self.returncode = returncode


def _exit_hung(signum: int, frame: Any) -> None:
    """SIGTERM handler of a hung non-head node waiting for node 0: the requeue came."""
    raise SystemExit(HUNG)


def _exit_stopped(signum: int, frame: Any) -> None:
    """SIGTERM handler for a stopped non-head node: exit now instead of after KillWait."""
    raise SystemExit(STOPPED_RESUMABLE)


def _log(message: str) -> None:
    """One line to the task's stderr (submitit's log file for this node)."""
    print(f"hpcgpu[node {os.environ.get('SLURM_NODEID', '0')}]: {message}", file=sys.stderr, flush=True)


def stop_signal() -> signal.Signals:
    """The signal submitit treats as preemption/timeout (SUBMITIT_PREEMPT_SIGNAL, default USR2)."""
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


def head_hostname() -> str:
    """First host of the job's node list (scontrol expands node[1-2]); this host outside Slurm."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return socket.gethostname()
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=60
    )
    hosts = out.stdout.split()
    if out.returncode != 0 or not hosts:
        raise NodeCommandError(f"`scontrol show hostnames {nodelist}` failed: {out.stderr.strip()}")
    return hosts[0]


def peek_exit(pid: int) -> int | None:
    """The child's return code (Popen convention) if it has exited, without reaping it.

    waitid(WNOWAIT) leaves the zombie in place, so a signal handler can look at the exit status
    while the main code is about to do the same; Popen.wait() inside a handler could deadlock on
    Popen's lock or find the child already reaped.
    """
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def wait_exit(pid: int, timeout_s: float) -> int | None:
    """Poll peek_exit every 0.05 s for up to timeout_s; None if the child still runs."""
    deadline = time.monotonic() + timeout_s
    while True:
        returncode = peek_exit(pid)
        if returncode is not None or time.monotonic() >= deadline:
            return returncode
        time.sleep(0.05)


class NodeCommand:
    """Run argv once on this node under submitit; requeue through submitit on preemption."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        rdzv_dir: str | os.PathLike[str],
        grace_s: float = 60.0,
        rdzv_timeout_s: float = 300.0,
        forward_signal: bool | None = None,
        requeues: int = 0,
        hang_requeues: int = 0,
        run_dir: str | os.PathLike[str] | None = None,
    ):
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError(f"argv must be a non-empty list of str, got {argv!r}")
        self.argv = list(argv)
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.rdzv_dir = str(rdzv_dir)
        self.grace_s = float(grace_s)
        self.rdzv_timeout_s = float(rdzv_timeout_s)
        self.forward_signal = forward_signal
        #: requeues done through checkpoint(); the restart count is the max of this and Slurm's
        self.requeues = int(requeues)
        #: requeues allowed after a hang, each without the hung node(s) (node_hangs.py); run_dir holds
        #: the hang reports (default: the parent of rdzv_dir, as the backend lays a run out)
        self.hang_requeues = int(hang_requeues)
        self.run_dir = str(run_dir) if run_dir is not None else str(Path(self.rdzv_dir).parent)
        self._proc: subprocess.Popen | None = None
        self._returncode: int | None = None
        self._stopping = False
        self._done = False
        self._hang_requeued = False
        self._previous_handler: Any = None

    # --- pickling: the running child never travels with the object ------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_proc=None, _returncode=None, _stopping=False, _done=False,
                     _previous_handler=None, _hang_requeued=False)
        return state

    def __repr__(self) -> str:
        return f"NodeCommand({self.argv!r}, requeues={self.requeues})"

    # --- what runs on the node -------------------------------------------------------------------

    def restart_count(self) -> int:
        """How many times this job was restarted (requeues by us or by Slurm)."""
        return job_restarts(self.requeues)

    def is_head(self) -> bool:
        """Node 0 picks the rendezvous endpoint (and, as global rank 0, requeues)."""
        return int(os.environ.get("SLURM_NODEID") or 0) == 0

    def endpoint_path(self) -> Path:
        """<rdzv_dir>/<jobid>-<restart>.endpoint: a fresh name for every attempt."""
        return Path(self.rdzv_dir) / f"{job_key()}-{self.restart_count()}.endpoint"

    def rendezvous(self) -> str:
        """Head: pick and publish host:port. Others: wait for it."""
        head = head_hostname()
        path = self.endpoint_path()
        if self.is_head():
            endpoint = f"{head}:{free_port(head)}"
            publish_endpoint(path, endpoint)
            _log(f"rendezvous endpoint {endpoint} published in {path}")
            return endpoint
        endpoint = wait_file(path, self.rdzv_timeout_s)
        if endpoint is None:
            raise NodeCommandError(
                f"rendezvous: the head node {head} did not publish {path} within "
                f"{self.rdzv_timeout_s:.0f}s; check node 0's log (did it start? is the directory "
                "shared between nodes?)"
            )
        _log(f"rendezvous endpoint {endpoint} read from {path}")
        return endpoint

    def child_env(self, endpoint: str) -> dict[str, str]:
        """The task's environment, then env, then the rendezvous and restart variables."""
        env = dict(os.environ)
        env.update(self.env)
        env[RDZV_ENDPOINT] = endpoint
        env[JOB_RESTARTS] = str(self.restart_count())
        return env

    def head_marker_path(self) -> Path:
        """<rdzv_dir>/<jobid>-<restart>.head: how node 0's attempt ended (requeued or ended)."""
        return Path(self.rdzv_dir) / f"{job_key()}-{self.restart_count()}.head"

    def __call__(self) -> dict[str, Any]:
        sig = stop_signal()
        # submitit installed its handler before calling us; ours runs first and chains to it.
        self._previous_handler = signal.signal(sig, self._on_stop_signal)
        head_outcome = "ended"
        try:
            try:
                returncode = self._run_child(self.rendezvous())
            except _ChildExited as exited:  # checkpoint() saw the child end during the stop
                returncode = self._returncode = exited.returncode
            return self._outcome(returncode)
        except SystemExit:
            # submitit leaves through sys.exit() right after `scontrol requeue`; _after_hang too
            if self._stopping or getattr(self, "_hang_requeued", False):
                head_outcome = "requeued"
            raise
        finally:
            self._done = True
            self._kill_child()
            signal.signal(sig, self._previous_handler)
            if self.is_head():
                self._publish_head_outcome(head_outcome)

    def _publish_head_outcome(self, outcome: str) -> None:
        """Tell waiting non-head nodes whether node 0 requeued; never mask the real error."""
        try:
            publish_endpoint(self.head_marker_path(), outcome)
        except OSError as err:
            _log(f"could not write {self.head_marker_path()}: {err}")

    def _run_child(self, endpoint: str) -> int:
        """Start argv with the contract's environment; its exit status once it has ended."""
        sys.stdout.flush()
        sys.stderr.flush()
        # Its own session: at the end the whole tree (e.g. the agent's ranks) can be killed.
        self._proc = subprocess.Popen(self.argv, env=self.child_env(endpoint), start_new_session=True)
        _log(f"started pid {self._proc.pid}: {' '.join(self.argv)} (restart {self.restart_count()})")
        # Not Popen.wait(): a stop signal landing between its waitpid() and its bookkeeping would
        # leave checkpoint() unable to learn the exit status. Peek, record, and only then reap.
        self._returncode = wait_exit(self._proc.pid, float("inf"))
        self._proc.wait()
        return self._settle(self._returncode)

    def _settle(self, returncode: int) -> int:
        """Give a stop signal that raced the child's exit a moment to reach its handler."""
        if self._stopped_by_signal(returncode) and not self._stopping:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and not self._stopping:
                time.sleep(0.05)  # a pending Python signal handler runs between these sleeps
        return returncode

    def _outcome(self, returncode: int) -> dict[str, Any]:
        """Return on success, exit 75 when stopped, raise NodeCommandError on failure."""
        host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        if returncode == 0:
            return {"node": int(os.environ.get("SLURM_NODEID") or 0), "host": host,
                    "returncode": 0, "restarts": self.restart_count()}
        if returncode == HUNG:
            self._after_hang()
        if self._stopped_by_signal(returncode):
            if self._stopping and not self.is_head():
                self._await_requeue(returncode)
            else:
                # Not through submitit's requeue (SIGTERM preemption, scancel, no submitit): no
                # result file; the exit status and Slurm's job state tell what happened.
                _log(f"child stopped ({returncode}); not requeued by submitit, exiting {STOPPED_RESUMABLE}")
            raise SystemExit(STOPPED_RESUMABLE)
        raise NodeCommandError(
            f"node {os.environ.get('SLURM_NODEID', '0')} ({host}): {self.argv[0]} failed, "
            f"exit status {returncode}",
            returncode,
        )

    def _after_hang(self) -> None:
        """The node agent found the ranks hung (exit 76). Node 0 requeues the job without the node(s)
        of the rank behind, or ends it (node_hangs.decide); the other nodes wait for its word."""
        if not self.is_head():
            signal.signal(signal.SIGTERM, _exit_hung)  # the requeue's SIGTERM ends the wait
            outcome = wait_file(self.head_marker_path(), 120)
            _log(f"hung; node 0 {outcome or 'did not say how it ended'}")
            raise SystemExit(HUNG)
        run_dir = Path(getattr(self, "run_dir", None) or Path(self.rdzv_dir).parent)
        done = load_excluded(run_dir)
        decision = decide(
            load_reports(run_dir), done["nodes"], done["requeues"], getattr(self, "hang_requeues", 0),
            int(os.environ.get("SLURM_JOB_NUM_NODES") or 1),
            partition_nodes(os.environ.get("SLURM_JOB_PARTITION")))
        if decision.requeue:
            failed = requeue_without(job_key(), decision.exclude)
            if failed is None:
                record_exclusion(run_dir, decision, job_key())
                _log(f"hung: {decision.reason}; requeued without {', '.join(decision.exclude)}")
                self._hang_requeued = True
                raise SystemExit(HUNG)
            _log(f"hung: {decision.reason}; the requeue failed: {failed}")
        else:
            _log(f"hung; not requeued: {decision.reason}")
        raise NodeCommandError(f"node 0: the ranks hung and the job is not requeued: {decision.reason}", HUNG)

    def _await_requeue(self, returncode: int) -> None:
        """Non-head, child stopped: wait (bounded) for node 0 to requeue the job or to end it."""
        # Exiting before the head could trip KillOnBadExit and kill it mid-checkpoint; and no
        # result file may be written, since this attempt has no result.
        _log(f"child stopped ({returncode}); waiting for node 0 to requeue the job")
        # The requeue's SIGTERM (if it has not come already, while the child was stopping) or
        # node 0's marker, whichever is first, ends the wait.
        signal.signal(signal.SIGTERM, _exit_stopped)
        outcome = wait_file(self.head_marker_path(), self.grace_s + 60)
        _log(f"node 0 {outcome or 'did not say how it ended'}")

    def _stopped_by_signal(self, returncode: int) -> bool:
        """75, or the stop signal ended the child before a checkpoint: killed by it (no handler yet)
        or the node agent's 128 + signal (its ranks were still starting). A stop before the first
        checkpoint loses nothing a requeue cannot redo, so it must not end the requeue chain."""
        return returncode in (STOPPED_RESUMABLE, -stop_signal(), 128 + stop_signal())

    # --- preemption ----------------------------------------------------------------------------

    def _should_forward(self) -> bool:
        """Inside a job step Slurm signals every process of the step, the child included."""
        if self.forward_signal is not None:
            return self.forward_signal
        return "SLURM_STEP_ID" not in os.environ

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """Forward the stop signal once, then let submitit's handler checkpoint and requeue."""
        if self._stopping:
            _log(f"{signal.Signals(signum).name} again: stop already in progress, ignored")
            return
        self._stopping = True
        proc = self._proc
        if proc is not None and self._returncode is None and peek_exit(proc.pid) is None \
                and self._should_forward():
            _log(f"forwarding {signal.Signals(signum).name} to pid {proc.pid}")
            proc.send_signal(signum)
        if callable(self._previous_handler):
            self._previous_handler(signum, frame)  # submitit: on global rank 0, calls checkpoint()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit hook (head only): wait for the child to stop, then requeue the next attempt."""
        if self._done:
            return None  # the signal came after __call__ returned: nothing left to requeue
        proc = self._proc
        if proc is not None:
            returncode = self._returncode
            if returncode is None:
                returncode = wait_exit(proc.pid, self.grace_s)
            if returncode is None:
                _log(f"child did not exit within grace_s={self.grace_s:.0f}s; killing it and requeuing")
                self._kill_child()
            elif not self._stopped_by_signal(returncode):
                # Finished (0) or failed while stopping: the job ends here, no requeue.
                raise _ChildExited(returncode)
        from submitit.helpers import DelayedSubmission  # only ever called under submitit

        attempt = self.next_attempt()
        _log(f"requeuing as restart {attempt.requeues}")
        return DelayedSubmission(attempt, *args, **kwargs)

    def next_attempt(self) -> "NodeCommand":
        """A copy of this command for the requeued job, with the restart counter incremented."""
        attempt = copy.copy(self)
        attempt.__dict__.update(self.__getstate__())
        attempt.requeues = self.restart_count() + 1
        return attempt

    def _kill_child(self) -> None:
        """Terminate the child's whole session (SIGTERM, then SIGKILL after 10 s) if it still runs."""
        proc = self._proc
        if proc is None or self._returncode is not None or peek_exit(proc.pid) is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            if wait_exit(proc.pid, wait_s) is not None:
                return
