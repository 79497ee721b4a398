"""`run local --sweep`: queue the tasks over this machine's GPU sets or CPU slots.

Each task is a whole local run, launched by its own process (`python -m hpcgpu.host.sweep_task
SWEEP_DIR INDEX`, in its own session, its output in <sweep dir>/tasks/t<i>.out); this runner
starts the next task when one ends, never more than the slots at once. A task on GPUs gets its
slot's GPUs as CUDA_VISIBLE_DEVICES. Ctrl-C (SIGINT) reaches every running task as a terminal's
Ctrl-C would reach a plain run (each checkpoints and exits 75) and starts no new one; SIGTERM
(`hpcgpu cancel SWEEP`) reaches each task's launcher as `hpcgpu cancel RUN` would. `--resume
SWEEP` runs the tasks that did not finish. Torch-free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from hpcgpu.contract import exitcodes
from hpcgpu.contract.errors import UserError
from hpcgpu.contract.procs import start_time
from hpcgpu.contract.states import RunState, state_from_exit
from hpcgpu.host.sweep_record import SweepRecord, update_sweep

#: how often the runner looks for tasks that ended
POLL_S = 0.2


def gpu_ids(environ: Mapping[str, str], count: int) -> list[str]:
    """The GPUs this machine lets the sweep use, as CUDA_VISIBLE_DEVICES names them."""
    cvd = environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [x.strip() for x in cvd.split(",") if x.strip() and x.strip() != "-1"][:count]
    return [str(i) for i in range(count)]


def gpu_slots(ids: Sequence[str], per_task: int) -> list[tuple[str, ...]]:
    """Disjoint GPU sets of per_task GPUs each (leftover GPUs stay idle)."""
    return [tuple(ids[k * per_task:(k + 1) * per_task]) for k in range(len(ids) // per_task)]


def slot_count(parallel: int, tasks: int, gpu_sets: int, cpus: Optional[int], ranks_per_task: int) -> int:
    """How many tasks run at once: --parallel (at most the GPU sets on GPUs), else every GPU set,
    else one task per ranks_per_task CPU cores (at least one); never more than the tasks."""
    if gpu_sets:
        most = min(parallel, gpu_sets) if parallel else gpu_sets
    else:
        most = parallel or max(1, (cpus or 1) // max(1, ranks_per_task))
    return max(1, min(most, tasks))


@dataclass
class Running:
    index: int
    process: subprocess.Popen
    slot: int
    started: float


class SweepQueue:
    """Runs the given tasks of a sweep, `slots` at a time; say() prints progress lines."""

    def __init__(self, record: SweepRecord, indices: Sequence[int], slots: int, gpu_sets: Sequence[tuple[str, ...]],
                 say: Callable[[str], None]):
        self.record, self.pending = record, list(indices)
        self.slots, self.gpu_sets, self.say = slots, list(gpu_sets), say
        self.running: list[Running] = []
        self.ended: dict[int, int] = {}
        self.stop_signal: Optional[int] = None

    def run(self) -> dict[int, int]:
        """Run until every task ended or a stop signal arrived and the running ones ended; exit
        status per task index that ran."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.slots and self.stop_signal is None:
                    self._start(self.pending.pop(0))
                if self.stop_signal is not None and not self.running:
                    break
                self._reap()
                time.sleep(POLL_S)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.ended

    def _free_slot(self) -> int:
        used = {r.slot for r in self.running}
        return next(k for k in range(self.slots) if k not in used)

    def _start(self, index: int) -> None:
        task = self.record.task(index)
        slot = self._free_slot()
        env = dict(os.environ)
        where = "CPU"
        if self.gpu_sets:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_sets[slot])
            where = f"GPU {env['CUDA_VISIBLE_DEVICES']}"
        out = Path(self.record.sweep_dir) / "tasks" / f"t{index}.out"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            process = subprocess.Popen([sys.executable, "-m", "hpcgpu.host.sweep_task", self.record.sweep_dir, str(index)],
                                       stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)  # Ctrl-C reaches it once: from this runner
        finally:
            os.close(fd)
        self.running.append(Running(index, process, slot, time.time()))
        self.say(f"task {index} ({task['label'] or 'base spec'}) started on {where}: run {task['run_id']}")

    def _reap(self) -> None:
        for r in list(self.running):
            code = r.process.poll()
            if code is None:
                continue
            self.running.remove(r)
            code = 128 - code if code < 0 else code
            self.ended[r.index] = code
            task = self.record.task(r.index)
            self.say(f"task {r.index} {ended_text(code, Path(self.record.sweep_dir) / 'tasks' / f't{r.index}.out', Path(task['run_dir']))}")

    def _on_signal(self, signum: int, _frame) -> None:
        if self.stop_signal is None:
            self.say(f"{signal.Signals(signum).name}: stopping the {len(self.running)} running task(s) "
                     f"(each checkpoints); {len(self.pending)} queued task(s) will not start")
        self.stop_signal = signum
        for r in self.running:
            try:
                if signum == signal.SIGINT:
                    os.killpg(r.process.pid, signum)  # as a terminal's Ctrl-C reaches a plain run: every process
                else:
                    r.process.send_signal(signum)  # as `hpcgpu cancel RUN`: the launcher, which tells its ranks
            except ProcessLookupError:
                pass


def ended_text(code: int, out: Path, run_dir: Path) -> str:
    """How a task ended, in words (with its final loss when done); a launch refused before it
    started quotes the task's error."""
    from hpcgpu.contract.runfiles import read_json

    state = state_from_exit(code)
    if state is RunState.DONE:
        loss = (read_json(run_dir / "summary.json") or {}).get("final_loss")
        return "done" + (f": final loss {loss:.6g}" if isinstance(loss, (int, float)) else "")
    if state is RunState.STOPPED:
        return "stopped after a checkpoint (--resume continues it)"
    if code == exitcodes.USAGE:
        return f"was refused: {last_error(out)}"
    return f"ended: {state} (exit {code}); its output: {out}"


def last_error(out: Path) -> str:
    try:
        lines = out.read_text(errors="replace").splitlines()
    except OSError:
        return "?"
    errors = [ln for ln in lines if ln.startswith("error: ")]
    return errors[-1][len("error: "):] if errors else (lines[-1] if lines else "?")


def hold_runner_lock(sweep_dir: str) -> int:
    """One runner per sweep (two would run its tasks twice); the lock lives as long as this process."""
    import fcntl

    fd = os.open(os.path.join(sweep_dir, ".runner.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        sweep_id = os.path.basename(os.path.normpath(sweep_dir))
        raise UserError(f"sweep {sweep_id} is being run by another hpcgpu process",
                        hint=f"wait for it, or stop it: hpcgpu cancel {sweep_id}") from None
    return fd


def run_sweep(record: SweepRecord, indices: Sequence[int], slots: int, gpu_sets: Sequence[tuple[str, ...]],
              say: Callable[[str], None]) -> dict[int, int]:
    """Run these tasks of the sweep here, recording this runner in sweep.json for `cancel`."""
    hold_runner_lock(record.sweep_dir)
    update_sweep(record.sweep_dir, pid=os.getpid(), pid_start=start_time(os.getpid()), host=os.uname().nodename)
    return SweepQueue(record, indices, slots, gpu_sets, say).run()


def sweep_exit_code(codes: Mapping[int, int]) -> int:
    """0 when every task that ran finished; 1 when one failed; else 75 (stopped: --resume continues)."""
    states = [state_from_exit(c) for c in codes.values()]
    if all(s is RunState.DONE for s in states):
        return 0
    if any(s not in (RunState.DONE, RunState.STOPPED, RunState.INTERRUPTED) for s in states):
        return 1
    return exitcodes.STOPPED_RESUMABLE
