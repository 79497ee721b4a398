"""Which `NCCL WARN` lines the GPU tier may shrug off: NCCL warns about plenty that does not hurt.

Benign examples, seen on healthy machines: "Could not find real path of /sys/class/net/...",
"NVLS multicast support is not available on dev 0", "NET/Plugin: Could not find: libnccl-net.so",
a deprecated environment variable. A warning that names an error, a CUDA failure, a timeout, an
abort or a refused/closed/reset connection is a real problem: a rank or a link broke.
"""

from __future__ import annotations

import re

# deliberately not "failed" alone: "Failed to open libibverbs.so" is NCCL probing for IB it may not need
PROBLEM = re.compile(r"error|failure|timed? ?out|abort|corrupt|unhandled|refused|reset by peer"
                     r"|closed the connection|out of memory", re.IGNORECASE)


def problem_warnings(warnings: list[str]) -> list[str]:
    """The NCCL WARN texts (host:pid prefix already cut) that indicate a real problem."""
    return [w for w in warnings if PROBLEM.search(w)]


def allreduce_is_healthy(check: dict) -> bool:
    """The doctor's `allreduce` check (as --json gives it) passed, allowing benign NCCL warnings.

    The doctor warns on any NCCL WARN line, and does so last (a wrong result, TCP between local
    GPUs or a failed exit return earlier), so 'NCCL warned' in the detail means nothing else was wrong.
    """
    if check["status"] == "ok":
        return True
    return (check["status"] == "warn" and "; NCCL warned: " in check["detail"]
            and not problem_warnings(check["data"].get("nccl_warnings", [])))
