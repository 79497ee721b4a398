"""The Slurm backend: submit a plan through submitit (one NodeCommand per node), then track it.

The script submitted is the plan's (`plan.extra["sbatch"]`, the dry run's text byte for byte);
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

from hpcgpu.contract import exitcodes
from hpcgpu.contract.errors import UserError
from hpcgpu.host.plan import Plan
from hpcgpu.host.runs import RunRecord, read_json, update_record
from hpcgpu.backends.slurm.planner import (UNLIMITED_MIN, folder_path, limit_to_minutes, node_grace_s,
                               partition_fit_problem, submitit_folder, valid_job_id)


#: states after which the job does not run again (Slurm's, and DONE/STOPPED/FAILED from result.json)
ENDED = frozenset({"COMPLETED", "DONE", "FAILED", "STOPPED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                   "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
#: held after a requeue: nothing happens until someone releases (scontrol release) or cancels it
HELD = frozenset({"REQUEUE_HOLD", "SPECIAL_EXIT"})


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


def _partition_rows(fields: str) -> tuple[list[str], str | None]:
    """`sinfo -h -o 'fields'` rows (first field %P) and the default partition (marked '*')."""
    rows = _run(["sinfo", "-h", "-o", fields]).stdout.splitlines()
    default = next((r.split("|")[0].rstrip("*") for r in rows if r.split("|")[0].endswith("*")), None)
    return rows, default


def check_fits(plan: Plan) -> None:
    """Refuse, before submitting, a request the partition can never run."""
    rows, default = _partition_rows("%P|%D|%G|%c|%m")
    params = plan.extra["sbatch_parameters"]
    partition = params.get("partition") or default
    if partition is None:
        return  # no default partition: sbatch will say what it wants
    problem = partition_fit_problem(plan.spec.resources.nodes, plan.layout.gpus, partition, rows,
                                    cpus_per_task=params.get("cpus_per_task") or 0, mem=plan.spec.resources.mem)
    if problem:
        raise UserError(f"the job cannot run: {problem}",
                        hint="see `sinfo -o '%P %D %G %c %m'`; change --nodes/--gpus-per-node/--cpus-per-task/--mem/--partition")


def time_limit_minutes(plan: Plan) -> int:
    """The job's time limit as submitit's timeout accounting needs it: resources.time, else the
    partition's default (or maximum) time, UNLIMITED_MIN when there is none (no timeouts then)."""
    params = plan.extra["sbatch_parameters"]
    if params.get("time"):
        return int(params["time"])
    rows, default = _partition_rows("%P|%L|%l")
    partition = params.get("partition") or default
    for row in rows:
        name, default_time, max_time = (row.split("|") + ["", ""])[:3]
        if name.rstrip("*") == partition:
            return limit_to_minutes(default_time) or limit_to_minutes(max_time) or UNLIMITED_MIN
    return UNLIMITED_MIN


def _executor(plan: Plan):
    """submitit's SlurmExecutor, submitting the plan's script instead of rendering its own."""
    import submitit

    script = plan.extra["sbatch"]

    class PlannedSlurmExecutor(submitit.SlurmExecutor):
        def _make_submission_file_text(self, command: str, uid: str) -> str:
            return script

    spec = plan.spec
    executor = PlannedSlurmExecutor(folder=folder_path(plan.run_dir), python=plan.extra["python"],
                                    max_num_timeout=spec.slurm.max_timeout_requeues)
    if str(executor.folder) != submitit_folder(plan.run_dir):  # the script names the folder: they must agree
        raise RuntimeError(f"submitit folder {executor.folder} differs from the planned {submitit_folder(plan.run_dir)}")
    # submitit uses these for its task list and its timeout-vs-preemption accounting, not for the script
    executor.update_parameters(nodes=spec.resources.nodes, ntasks_per_node=1, time=time_limit_minutes(plan))
    return executor


class SlurmBackend:
    """Submits with submitit; status through scontrol and the run dir; cancel with scancel."""

    name = "slurm"

    def launch(self, plan: Plan, resumed: bool = False) -> str:
        """Submit; return the job id (also recorded in run.json). A refused new job leaves no run dir;
        a refused resume leaves the run dir as it was (its checkpoints are the point)."""
        from hpcgpu.backends.slurm.node_command import NodeCommand
        from hpcgpu.host.envvars import is_secret

        env = {k: v for k, v in plan.env.items() if not is_secret(k)}  # secrets travel via sbatch's --export=ALL
        command = NodeCommand(list(plan.container_prefix) + list(plan.node_argv), env=env,
                              rdzv_dir=Path(plan.run_dir) / "rdzv", grace_s=node_grace_s(plan.spec),
                              rdzv_timeout_s=plan.spec.distributed.rdzv_timeout_s)
        from submitit.core.utils import FailedJobError

        executor = _executor(plan)
        said = io.StringIO()  # submitit prints sbatch's stderr on failure: say it once, in our error
        try:
            with contextlib.redirect_stderr(said):
                job = executor.submit(command)
        except FailedJobError as e:  # sbatch refused (bad account, unknown feature, ...): nothing half-submitted
            if not resumed:
                shutil.rmtree(plan.run_dir, ignore_errors=True)
            raise UserError(f"sbatch refused the job: {_sbatch_error(e)}",
                            hint="nothing was submitted; fix the request (see `sinfo`, `scontrol show partition`)") from None
        sys.stderr.write(said.getvalue())
        update_record(Path(plan.run_dir), job_id=str(job.job_id))
        return str(job.job_id)

    def status(self, record: RunRecord) -> str:
        return self.job_info(record)["state"]

    def job_info(self, record: RunRecord) -> dict:
        """state, nodelist, restarts, reason: from scontrol while Slurm knows the job, else the run dir."""
        run_dir = Path(record.run_dir)
        saved = read_json(run_dir / "run.json") or {}
        info = {"state": "", "nodelist": saved.get("nodelist", ""), "reason": "",
                "restarts": max(int(saved.get("restarts") or 0), _restarts_in_run_dir(record))}
        fields = _show_job(record.job_id) if record.job_id and shutil.which("scontrol") else None
        if fields:
            info["state"] = fields.get("JobState", "UNKNOWN")
            info["restarts"] = max(info["restarts"], int(fields.get("Restarts") or 0))
            if fields.get("NodeList") not in (None, "", "(null)"):
                info["nodelist"] = fields["NodeList"]
            if fields.get("Reason") not in (None, "None"):
                info["reason"] = fields["Reason"]
            if (info["nodelist"], info["restarts"]) != (saved.get("nodelist", ""), saved.get("restarts")):
                _remember(run_dir, nodelist=info["nodelist"], restarts=info["restarts"])
        if info["state"] in ("", "COMPLETED"):  # forgotten, or ended: how it ended is in result.json
            info["state"] = _state_from_result(record) or info["state"] or "UNKNOWN"
        elif info["state"] == "FAILED" and _state_from_result(record, since=_epoch(fields.get("StartTime"))) == "STOPPED":
            info["state"] = "STOPPED"  # checkpointed and stopped, but not requeued (e.g. timeouts used up)
        return info

    def cancel(self, record: RunRecord) -> None:
        """scancel: the ranks get SIGTERM, checkpoint within KillWait, and the job ends (not requeued)."""
        if not record.job_id:
            raise UserError(f"run {record.id} has no Slurm job id yet")
        state = self.job_info(record)["state"]
        if state in ENDED:
            raise UserError(f"run {record.id} (job {record.job_id}) has already ended: {state}")
        out = _run(["scancel", valid_job_id(record.job_id)])
        if out.returncode != 0:
            raise UserError(f"scancel {record.job_id} failed: {out.stderr.strip()}")


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


def _state_from_result(record: RunRecord, since: float = 0.0) -> str:
    """DONE / STOPPED / FAILED from node 0's result.json ('' if absent, or older than since)."""
    result = read_json(Path(record.run_dir) / "result.json")
    if result is None or float(result.get("ended") or 0) < since:
        return ""
    return {exitcodes.OK: "DONE", exitcodes.STOPPED_RESUMABLE: "STOPPED"}.get(result.get("exit_code"), "FAILED")


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


def restore_secret_env(withheld: dict[str, str]) -> None:
    """Put the spec's secret env values into this process's environment so sbatch exports them
    (--export=ALL) without their values ever being written to the run dir or the script."""
    os.environ.update(withheld)
