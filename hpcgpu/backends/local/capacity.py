"""How many ranks this machine can hold: `--nproc 100000` must be refused with the limit it hits,
not fork until the machine stops answering. Pure: the limits come from HostFacts.

Generous on purpose: oversubscribing cores (8 CPU ranks on 2 cores, for testing) is fine; only a
count that cannot start or cannot finish its rendezvous is refused.
"""

from __future__ import annotations

from typing import Optional

from hpcgpu.contract.errors import UserError
from hpcgpu.host.facts import HostFacts

#: ranks per CPU core: beyond this, importing torch alone (about a CPU-second per rank) outlasts
#: the default rendezvous timeout, and every collective waits on the scheduler
RANKS_PER_CPU = 32
#: open files the node agent holds per rank (stdout and stderr logs, a store connection), and beyond them
FILES_PER_RANK, FILES_BASE = 3, 64
#: tasks (processes and threads: RLIMIT_NPROC counts both) per rank at least: main, gloo, store, watchdog
TASKS_PER_RANK = 4


def rank_limits(facts: HostFacts) -> list[tuple[int, str]]:
    """(most ranks, why) for each limit known on this machine."""
    limits = []
    if facts.cpus:
        limits.append((facts.cpus * RANKS_PER_CPU,
                       f"{facts.cpus} CPU core(s) x {RANKS_PER_CPU} ranks per core = {facts.cpus * RANKS_PER_CPU}"))
    if facts.max_open_files:
        most = max(1, (facts.max_open_files - FILES_BASE) // FILES_PER_RANK)
        limits.append((most, f"the open-file limit (ulimit -n) is {facts.max_open_files}: the node agent holds "
                             f"about {FILES_PER_RANK} files per rank, so at most {most} ranks"))
    if facts.max_user_procs:
        most = max(1, facts.max_user_procs // TASKS_PER_RANK)
        limits.append((most, f"the process limit (ulimit -u) is {facts.max_user_procs} processes and threads: "
                             f"each rank runs at least {TASKS_PER_RANK}, so at most {most} ranks"))
    return limits


def tightest(facts: HostFacts) -> Optional[tuple[int, str]]:
    """The limit that binds first, or None when none is known."""
    return min(rank_limits(facts), default=None, key=lambda limit: limit[0])


def check_ranks_fit(nproc: int, device: str, facts: HostFacts) -> None:
    """Raise UserError naming the key, the limit hit and its number when nproc ranks cannot run here."""
    limit = tightest(facts)
    if limit is None or nproc <= limit[0]:
        return
    most, why = limit
    key = "resources.procs_per_node (--nproc)" if device == "cpu" else "resources.gpus_per_node (--gpus)"
    raise UserError(f"{key} asks for {nproc} ranks on this machine, more than it can hold: {why}",
                    hint=f"run at most {most} ranks here (--nproc {most}), or spread them over nodes with "
                         "`hpcgpu submit slurm`" + (", or raise the limit" if "ulimit" in why else ""))
