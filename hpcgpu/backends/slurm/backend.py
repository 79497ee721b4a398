"""The Slurm backend: submit a plan through submitit (one NodeCommand per node), then track it.

The script submitted is the plan's (`plan.request["sbatch"]`, the dry run's text byte for byte);
submitit pickles the NodeCommand, runs sbatch, and requeues on the warning signal. Without
slurmdbd there is no sacct, so state comes from `scontrol show job` while Slurm remembers the job
(MinJobAge after its end), and from the run directory after (result.json, written by node 0).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

from hpcgpu.backends import LaunchHandle, RunStatus
from hpcgpu.backends.slurm.planner import describe_slurm, slurm_plan, submitit_folder, valid_job_id
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.plan import Plan
from hpcgpu.contract.runfiles import read_json, read_result
from hpcgpu.contract.states import RunState, state_from_exit
from hpcgpu.host.facts import HostFacts
from hpcgpu.host.runs import RunRecord, update_record
from hpcgpu.host.spec import Spec

#: Slurm's job states (scontrol's JobState) as RunStates; COMPLETED is refined by result.json
SLURM_STATES: dict[str, RunState] = {
    "PENDING": RunState.PENDING, "REQUEUED": RunState.PENDING, "REQUEUE_FED": RunState.PENDING,
    "CONFIGURING": RunState.RUNNING, "RUNNING": RunState.RUNNING, "COMPLETING": RunState.RUNNING,
    "RESIZING": RunState.RUNNING, "SUSPENDED": RunState.RUNNING, "SIGNALING": RunState.RUNNING,
    "STAGE_OUT": RunState.RUNNING, "STOPPED": RunState.RUNNING,
    "COMPLETED": RunState.DONE, "CANCELLED": RunState.CANCELLED, "FAILED": RunState.FAILED,
    "BOOT_FAIL": RunState.FAILED, "TIMEOUT": RunState.TIMEOUT, "DEADLINE": RunState.TIMEOUT,
    "PREEMPTED": RunState.PREEMPTED, "NODE_FAIL": RunState.NODE_FAIL, "OUT_OF_MEMORY": RunState.OUT_OF_MEMORY,
    "REQUEUE_HOLD": RunState.HELD, "SPECIAL_EXIT": RunState.HELD,
}


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def require_slurm() -> None:
    """Slurm's client tools must be on PATH and the controller must answer."""
    if shutil.which("sbatch") is None:
        raise UserError("Slurm is not available here: no `sbatch` on PATH",
                        hint="run this on a login node of your cluster, or use `hpcgpu run local`")
    try:
        out = _run(["sinfo", "-h", "-o", "%P"], timeout=20)
    except (subprocess.TimeoutExpired, OSError):
        out = None
    if out is None or out.returncode != 0:
        detail = out.stderr.strip() if out is not None else "sinfo did not answer within 20 s"
        raise UserError(f"the Slurm controller does not answer: {detail}", hint="check `sinfo`; is slurmctld up?")


def _executor(plan: Plan, script: Optional[str] = None, folder: Optional[str] = None):
    """submitit's SlurmExecutor, submitting the plan's script instead of rendering its own (or
    `script` with its submitit `folder`: a sweep's job array)."""
    import submitit

    script = script or plan.request["sbatch"]
    folder = folder or submitit_folder(plan.run_dir)

    class PlannedSlurmExecutor(submitit.SlurmExecutor):
        def _make_submission_file_text(self, command: str, uid: str) -> str:
            return script

    executor = PlannedSlurmExecutor(folder=Path(folder), python=plan.request["python"],
                                    max_num_timeout=plan.request["max_timeout_requeues"])
    if str(executor.folder) != folder:  # the script names the folder: they must agree
        raise RuntimeError(f"submitit folder {executor.folder} differs from the planned {folder}")
    # submitit uses these for its task list and its timeout-vs-preemption accounting, not for the script
    executor.update_parameters(nodes=plan.nodes, ntasks_per_node=1, time=plan.request["time_limit_min"])
    return executor


class SlurmBackend:
    """Submits with submitit; status through scontrol and the run dir; cancel with scancel."""

    name = "slurm"

    def plan(self, spec: Spec, facts: HostFacts, *, run_id: str, run_dir: str, created: float = 0.0) -> Plan:
        return slurm_plan(spec, facts, run_id=run_id, run_dir=run_dir, created=created)

    def preflight(self, plan: Plan, *, resuming: Optional[RunRecord] = None) -> None:
        """Slurm answers, the request fits a partition, the container runtime is there; a resumed
        run must have ended without finishing."""
        require_slurm()
        if resuming is not None:
            self._check_resumable(resuming)
        if plan.request.get("assumed"):
            raise UserError(f"not submitted: {plan.request['assumed']}",
                            hint="a dry run may assume; a job needs the real count (sinfo -o '%P %G' shows it)")
        if plan.request["fit_problem"]:
            raise UserError(f"the job cannot run: {plan.request['fit_problem']}",
                            hint="see `sinfo -o '%P %D %G %c %m'`; change --nodes/--gpus-per-node/--cpus-per-task/--mem/--partition")
        container = plan.spec.get("container")
        if container:
            from hpcgpu.host.container import check_runtime

            check_runtime(container["runtime"], container["image"])

    def _check_resumable(self, record: RunRecord) -> None:
        state = self.status(record).state
        if state is RunState.DONE:
            raise UserError(f"run {record.id} has finished (job {record.job_id}: {state}); there is nothing to continue",
                            hint="to train longer, start a new run with checkpoint.resume set to its last checkpoint")
        if not state.resumable:
            raise UserError(f"run {record.id} is not over: job {record.job_id} is {state}",
                            hint=f"a requeued job resumes by itself; to resubmit, end it first: hpcgpu cancel {record.id}")

    def launch(self, plan: Plan, withheld: Mapping[str, str]) -> LaunchHandle:
        """Submit; the handle carries the job id (also recorded in run.json). A refused job raises
        UserError and has started nothing."""
        executor = _executor(plan)
        with submitting(withheld):
            job = executor.submit(node_command(plan))
        update_record(Path(plan.run_dir), job_id=str(job.job_id))
        return LaunchHandle(run_id=plan.run_id, job_id=str(job.job_id))

    def describe(self, plan: Plan) -> str:
        return describe_slurm(plan)

    def status(self, record: RunRecord) -> RunStatus:
        """State, node list, restarts, reason: from scontrol while Slurm knows the job, else the run dir."""
        run_dir = Path(record.run_dir)
        saved = read_json(run_dir / "run.json") or {}
        nodelist, reason = saved.get("nodelist", ""), ""
        restarts = max(int(saved.get("restarts") or 0), _restarts_in_run_dir(record))
        fields = _show_job(record.job_id) if record.job_id and shutil.which("scontrol") else None
        raw = ""
        if fields:
            raw = fields.get("JobState", "")
            restarts = max(restarts, int(fields.get("Restarts") or 0))
            if fields.get("NodeList") not in (None, "", "(null)"):
                nodelist = fields["NodeList"]
            if fields.get("Reason") not in (None, "None"):
                reason = fields["Reason"]
            if (nodelist, restarts) != (saved.get("nodelist", ""), saved.get("restarts")):
                _remember(run_dir, nodelist=nodelist, restarts=restarts)
        state = SLURM_STATES.get(raw, RunState.UNKNOWN)
        if raw and state is RunState.UNKNOWN:
            reason = f"{raw} {reason}".strip()  # a state this version does not know: show Slurm's word
        if raw in ("", "COMPLETED"):  # forgotten, or ended: how it ended is in result.json
            result = read_result(run_dir)
            state = state_from_exit(result["exit_code"]) if result else state if raw else RunState.UNKNOWN
        elif state is RunState.FAILED:
            result = read_result(run_dir, since=_epoch(fields.get("StartTime")))
            ended = state_from_exit(result["exit_code"]) if result else None
            if ended in (RunState.STOPPED, RunState.HUNG):
                # checkpointed and stopped, but not requeued (e.g. timeouts used up); or hung, and not
                # requeued (no spare node, the same rank hung on two nodes)
                state = ended
        return RunStatus(state=state, nodes=nodelist, restarts=restarts, reason=reason)

    def cancel(self, record: RunRecord) -> None:
        """scancel: the ranks get SIGTERM, checkpoint within KillWait, and the job ends (not requeued)."""
        if not record.job_id:
            raise UserError(f"run {record.id} has no Slurm job id yet")
        state = self.status(record).state
        if state.ended:
            raise UserError(f"run {record.id} (job {record.job_id}) has already ended: {state}")
        out = _run(["scancel", valid_job_id(record.job_id)])
        if out.returncode != 0:
            raise UserError(f"scancel {record.job_id} failed: {out.stderr.strip()}")


def node_command(plan: Plan):
    """What submitit runs on each node of the plan's job: its node agent, with rendezvous and requeue.
    The node agent reads plan.json; secrets reach it through the job's environment (sbatch
    --export=ALL), never the script or a file."""
    from hpcgpu.backends.slurm.node_command import NodeCommand

    return NodeCommand(list(plan.container_prefix) + list(plan.node_argv), env={},
                       rdzv_dir=Path(plan.run_dir) / "rdzv", grace_s=plan.request["grace_s"],
                       rdzv_timeout_s=plan.request["rdzv_timeout_s"],
                       hang_requeues=plan.request.get("hang_requeues", 0), run_dir=plan.run_dir)


@contextlib.contextmanager
def submitting(withheld: Mapping[str, str]):
    """Around an sbatch call: the withheld secrets in its environment; sbatch refusing the job
    becomes one UserError (submitit prints sbatch's stderr too: said once, in the error)."""
    from submitit.core.utils import FailedJobError

    said = io.StringIO()
    try:
        with _environment(withheld), contextlib.redirect_stderr(said):
            yield
    except FailedJobError as e:  # sbatch refused (bad account, unknown feature, ...): nothing half-submitted
        raise UserError(f"sbatch refused the job: {_sbatch_error(e)}",
                        hint="nothing was submitted; fix the request (see `sinfo`, `scontrol show partition`)") from None
    sys.stderr.write(said.getvalue())


@contextlib.contextmanager
def _environment(values: Mapping[str, str]):
    """These variables in os.environ while sbatch runs (it exports the environment), then as before."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _show_job(job_id: str) -> dict[str, str] | None:
    """`scontrol show job -o`, as a dict; None once slurmctld has forgotten the job."""
    out = _run(["scontrol", "show", "job", "-o", valid_job_id(job_id)])
    if out.returncode != 0 or "=" not in out.stdout:
        return None
    # split only on spaces that start a new Key=, so values with spaces (Reason, Command) survive
    fields = re.split(r" (?=[A-Za-z][\w:/]*=)", out.stdout.strip().splitlines()[0])
    return dict(f.split("=", 1) for f in fields if "=" in f)


def _restarts_in_run_dir(record: RunRecord) -> int:
    """Requeues seen by the nodes: NodeCommand writes rdzv/<jobid>-<restart>.endpoint per attempt."""
    if not record.job_id:
        return 0
    pattern = re.compile(rf"{re.escape(record.job_id)}-(\d+)\.endpoint")
    counts = [int(m.group(1)) for p in (Path(record.run_dir) / "rdzv").glob("*.endpoint")
              if (m := pattern.fullmatch(p.name))]
    return max(counts, default=0)


def _remember(run_dir: Path, **facts) -> None:
    """Keep what scontrol said in run.json, for when Slurm has forgotten the job (best effort)."""
    try:
        update_record(run_dir, **facts)
    except OSError:
        pass  # someone else's run dir, read-only: status still works


def _epoch(slurm_time: str | None) -> float:
    """scontrol's local-time timestamp (2026-11-21T13:02:28) as seconds since the epoch; 0 if none."""
    try:
        return time.mktime(time.strptime(slurm_time or "", "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0


def _sbatch_error(error: Exception) -> str:
    """The useful line of submitit's FailedJobError (it wraps sbatch's stderr in a long message)."""
    text = str(error)
    lines = [ln.strip() for ln in text.splitlines() if "sbatch: error" in ln or "error:" in ln.lower()]
    return "; ".join(dict.fromkeys(lines)) or text.strip()
