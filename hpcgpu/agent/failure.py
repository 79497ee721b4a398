"""What the node agent says when ranks fail: the first failing rank, its traceback, and a hint."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Callable, Optional

#: lines of a failed rank's own log shown when it left no traceback (os._exit, a C-level crash)
LOG_TAIL_LINES = 12


def describe_failure(failures: dict, timeout_s: Optional[int] = None, run_dir: Optional[Path] = None,
                     node: str = "", stderr_tail: Optional[Callable[[int], list[str]]] = None) -> str:
    """Name the rank that failed first and its node, with its traceback (else the end of its log in
    run_dir, and its last stderr lines); ranks stopped because of it come after."""
    # torch elastic adds the ranks that died on their own first and the ranks it then stopped
    # with SIGTERM after them (dict order). Its timestamps are whole seconds, so they cannot tell
    # a rank killed with SIGKILL from the peer whose collective failed a moment later.
    def order(item):
        position, (rank, f) = item
        return (f.exitcode == -signal.SIGTERM, position)

    (_, (first_rank, first)), *others = sorted(enumerate(failures.items()), key=order)
    on = f", {node}" if node else ""
    lines = [f"rank {first_rank} (local rank {first.local_rank}, pid {first.pid}{on}) failed with {_how(first)}"]
    msg = first.message
    text = ""
    if isinstance(msg, dict):
        text = str(msg.get("extraInfo", {}).get("py_callstack") or msg.get("message", ""))
        lines.append("  " + text.rstrip().replace("\n", "\n  "))
    elif msg:
        text = str(msg)
        lines.append(f"  {msg}")
    if not text.strip().startswith("Traceback"):
        lines.extend(_own_lines(first_rank, run_dir, stderr_tail))
    if others:
        lines.append("then stopped: " + ", ".join(f"rank {r} ({_how(f)})" for _, (r, f) in others))
    hint = _failure_hint(first, text, [r for _, (r, _f) in others], timeout_s)
    if hint:
        lines.append(f"hint: {hint}")
    return "\n".join(lines)


def _own_lines(rank: int, run_dir: Optional[Path], stderr_tail: Optional[Callable[[int], list[str]]]) -> list[str]:
    """A rank that left no traceback: the end of its log (stdout and stderr in order), and its last
    stderr lines when the log's end does not hold them (a rank printing progress after its error)."""
    out = []
    log = Path(run_dir) / "logs" / f"rank{rank}.log" if run_dir is not None else None
    tail = log_tail(log, LOG_TAIL_LINES) if log is not None else []
    err = stderr_tail(rank) if stderr_tail is not None else []
    if any(line not in tail for line in err):
        out.append("  last lines of its stderr:")
        out.extend(f"  | {line}" for line in err)
    if tail:
        out.append(f"  last lines of its log ({log}):")
        out.extend(f"  | {line}" for line in tail)
    return out


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


def log_tail(path: Path, n: int) -> list[str]:
    """The last n lines of a log (read from its end: a rank log may be large); [] when unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []
