"""This rank's side of the hang watchdog: progress beats, and the answer to a hang-report request.

The Trainer beats at every phase of a step (data, forward, backward, optimizer, its own
collectives, checkpoints); a user script beats through `dist.heartbeat()` and every
`dist.should_stop()` it already calls once a step. A beat is two stores into shared memory
(contract/heartbeat.py). A watcher thread waits for the node agent's request for a hang report and
then writes, next to the rank log, the Python stack of every thread of this rank (a thread can read
them while the main thread is blocked inside a collective) and torch's flight-recorder record of
its collectives (the sequence number of the last one it entered and the last one that completed).
Without a node agent that watches (plain torchrun, the watchdog off), every call here does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Optional

from hpcgpu.contract.runfiles import make_private_dir, write_private_text
from hpcgpu.contract.envnames import HEARTBEAT_FILE
from hpcgpu.contract.heartbeat import PHASE, RankHeartbeat, dump_paths, open_rank_heartbeat

#: how often the watcher thread looks for a report request (the agent waits longer than this)
REQUEST_POLL_S = 0.2
#: frames of each thread kept in a dump (the innermost ones matter)
MAX_FRAMES = 40

_hb: Optional[RankHeartbeat] = None
_watcher: Optional[threading.Thread] = None
_stopped = threading.Event()
_step = 0
_boundaries = 0  # a script's should_stop() calls: its steps, unless it numbers them itself
_numbered = False


def start(run_dir: Path, rank: int, local_rank: int, environ=os.environ) -> bool:
    """Open this rank's slot and start the watcher thread; False when no agent watches."""
    global _hb, _watcher
    stop()
    _hb = open_rank_heartbeat(environ, local_rank)
    if _hb is None:
        if environ.get(HEARTBEAT_FILE):  # the agent watches, but this rank cannot report: say so
            print(f"hpcgpu: warning: cannot open the heartbeat file {environ[HEARTBEAT_FILE]}: the hang "
                  "watchdog sees only whether this rank is alive", file=sys.stderr, flush=True)
        return False
    _stopped.clear()
    out = Path(run_dir) / "logs" / "hang"
    _watcher = threading.Thread(target=_answer_requests, args=(_hb, out, rank), name="hpcgpu-watchdog", daemon=True)
    _watcher.start()
    return True


def beat(phase: str, step: Optional[int] = None) -> None:
    """Record progress: this rank entered `phase` (contract/heartbeat.PHASES) at `step` (default: the last)."""
    global _step
    if _hb is None:
        return
    if step is not None:
        _step = step
    _hb.beat(PHASE[phase], _step)


def user_beat(phase: str = "user", step: Optional[int] = None) -> None:
    """A script's own beat (dist.heartbeat): once it gives a step, its numbering is the one shown."""
    global _numbered
    if phase not in PHASE:
        raise ValueError(f"heartbeat phase {phase!r}: use one of {', '.join(PHASE)}")
    _numbered = _numbered or step is not None
    beat(phase, step)


def step_boundary() -> None:
    """A script called dist.should_stop(): a step ended (counted as its step unless it numbers them)."""
    global _boundaries
    _boundaries += 1
    beat("collective", None if _numbered else _boundaries)


def stop() -> None:
    """No more beats, and the watcher thread ends."""
    global _hb, _watcher
    _hb = None
    _stopped.set()
    if _watcher is not None:
        _watcher.join(timeout=2 * REQUEST_POLL_S + 1)
        _watcher = None


def _answer_requests(hb: RankHeartbeat, out: Path, rank: int) -> None:
    answered = hb.report_request()
    while not _stopped.wait(REQUEST_POLL_S):
        request = hb.report_request()
        if request == answered:
            continue
        try:
            write_dump(out, rank, request)
        except Exception as e:  # the answer must come, even without the dump: the agent says why
            print(f"hpcgpu: could not write the hang dump of rank {rank}: {e}", file=sys.stderr, flush=True)
        answered = request
        hb.answer(request)


def write_dump(out: Path, rank: int, request: int) -> None:
    stacks_path, flight_path = dump_paths(out, rank, request)
    make_private_dir(out)
    write_private_text(stacks_path, json.dumps(thread_stacks()))
    record = flight_record()
    if record is not None:
        write_private_text(flight_path, record)


def thread_stacks() -> list[dict]:
    """Every thread of this process: name, whether it is the main thread, frames (innermost last)."""
    names = {t.ident: t for t in threading.enumerate()}
    me = threading.get_ident()
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        thread = names.get(ident)
        frames = [{"file": f.filename, "line": f.lineno, "function": f.name, "code": (f.line or "").strip()}
                  for f in traceback.extract_stack(frame)[-MAX_FRAMES:]]
        out.append({"thread": thread.name if thread else f"thread {ident}",
                    "main": thread is threading.main_thread(), "frames": frames})
    out.sort(key=lambda t: not t["main"])
    return out


def flight_record() -> Optional[str]:
    """torch's flight-recorder dump (JSON text) of this process's collectives, when this torch has one
    for the backend in use (gloo from torch 2.8, NCCL earlier); None otherwise."""
    try:
        from torch._C import _distributed_c10d as c10d
    except ImportError:
        return None
    for name in ("_dump_fr_trace_json", "_dump_nccl_trace_json"):
        dump = getattr(c10d, name, None)
        if dump is None:
            continue
        try:
            data = dump()
        except Exception:
            continue
        return data.decode() if isinstance(data, bytes) else str(data)
    return None
