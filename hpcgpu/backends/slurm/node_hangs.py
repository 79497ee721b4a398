"""After a hang under Slurm: requeue the job without the node(s) where the rank behind ran, or end it.

Node 0's NodeCommand calls this when its node agent exits 76 (the watchdog wrote a hang report,
hpcgpu/agent/watchdog.py). `decide` is pure: it reads the run's hang reports (oldest first), the
nodes already excluded, the requeues left, and the partition's nodes. The rest asks Slurm for the
requeue: `scontrol requeuehold` (the job waits, held, instead of starting again at once), `scontrol
update ExcNodeList=...` (Slurm changes it on pending jobs only), `scontrol release`. The excluded nodes accumulate in
`<run dir>/excluded.json` (what `hpcgpu status` shows).

A node is blamed only when the rank behind is told apart (a stopped process, the fewest collectives
entered or the fewest heartbeats). A rank that hangs again after it moved to another node hangs
wherever it runs: the cause is its code or data, not the node, so the job ends instead.
Standard library only (the node half of the Slurm backend).
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hpcgpu.contract.runfiles import EXCLUDED_FILE, hang_reports, load_excluded, read_json, write_json_atomic


@dataclass(frozen=True)
class HangDecision:
    requeue: bool
    exclude: tuple[str, ...]
    """every node the requeued job must avoid (the earlier exclusions included)"""
    reason: str


def culprit_hosts(report: dict) -> dict[int, str]:
    """{culprit rank: the node it ran on} of one hang report."""
    hosts = {r["rank"]: r.get("host", "?") for r in report.get("ranks", [])}
    return {rank: hosts.get(rank, "?") for rank in report.get("culprits", [])}


def decide(reports: Sequence[dict], excluded: Sequence[str], requeues_done: int, requeues_allowed: int,
           job_nodes: int, partition_nodes: Sequence[str]) -> HangDecision:
    """What to do about the newest hang report (reports: oldest first)."""
    kept = tuple(sorted(excluded))
    if not reports:
        return HangDecision(False, kept, "no hang report was found in the run directory")
    now = culprit_hosts(reports[-1])
    if not now:
        return HangDecision(False, kept, "no rank was behind the others (they all waited at the same place): "
                                         "no node to blame")
    for earlier in reports[:-1]:
        for rank, host in culprit_hosts(earlier).items():
            if rank in now and now[rank] != host:
                return HangDecision(False, kept, f"rank {rank} hung on {host} before and on {now[rank]} now: it "
                                                 "hangs wherever it runs (its code or data), not because of a node")
    if requeues_done >= requeues_allowed:
        return HangDecision(False, kept, f"watchdog.requeues ({requeues_allowed}) used up")
    exclude = tuple(sorted(set(kept) | set(now.values())))
    spare = [n for n in partition_nodes if n not in exclude]
    if len(spare) < job_nodes:
        return HangDecision(False, kept, f"without {', '.join(exclude)} the partition has {len(spare)} node(s) "
                                         f"for a job of {job_nodes}")
    return HangDecision(True, exclude, f"rank(s) {', '.join(map(str, sorted(now)))} hung on "
                                       f"{', '.join(sorted(set(now.values())))}")


def load_reports(run_dir: Path) -> list[dict]:
    return [r for r in (read_json(p.with_suffix(".json")) for p in hang_reports(run_dir)) if r]


def record_exclusion(run_dir: Path, decision: HangDecision, job_id: str) -> None:
    done = load_excluded(run_dir)
    done["history"].append({"time": time.time(), "job": job_id, "nodes": list(decision.exclude),
                            "reason": decision.reason})
    done.update(nodes=list(decision.exclude), requeues=done["requeues"] + 1)
    write_json_atomic(Path(run_dir) / EXCLUDED_FILE, done)


def partition_nodes(partition: Optional[str]) -> list[str]:
    """The nodes of the job's partition (sinfo), [] when Slurm cannot say."""
    argv = ["sinfo", "-h", "-N", "-o", "%N"] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(set(out.stdout.split())) if out.returncode == 0 else []


def requeue_without(job_id: str, nodes: Sequence[str]) -> Optional[str]:
    """Requeue the job held (it cannot start again before its exclusions are set), set them, release
    it; None, or what Slurm said when a step failed (the release is tried whatever happened before)."""
    held = _scontrol(["requeuehold", job_id])
    if held:
        return held
    update = _scontrol(["update", f"JobId={job_id}", f"ExcNodeList={','.join(nodes)}"])
    release = _scontrol(["release", job_id])
    return update or release


def _scontrol(args: list[str]) -> Optional[str]:
    """Run scontrol immune to SIGTERM: the requeue terminates the job's step, and with it every
    process of the step (this one's children too) gets SIGTERM, SIGKILL only after KillWait; the
    update and the release must outlive that SIGTERM (an ignored signal stays ignored across exec)."""
    argv = ["scontrol", *args]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{' '.join(argv)}`: {e}"
    return None if out.returncode == 0 else f"`{' '.join(argv)}`: {out.stderr.strip() or out.stdout.strip()}"
