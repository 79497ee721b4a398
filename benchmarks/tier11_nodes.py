"""Tier 11: launch vs nodes on the local Slurm cluster. The bundled demo (the Trainer, one CPU rank per
node) submitted with `hpcgpu submit slurm` on 1, 2, 4 and 8 nodes: seconds from starting the submission
to the end of the first optimizer step on the last rank, per node count.

The cluster has three nodes unless started with more (`make slurm-up HPCGPU_SLURM_NODES=8`, which adds
partition scale); the tier runs in the partition with the most nodes and says which node counts did
not fit. Every node lives on this machine: the figures show what hpcgpu and Slurm add per node (one
agent and one rank each, all starting on the same cores), not a real cluster's network.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from pathlib import Path

import yaml

from benchmarks.harness import Bench, Figure, Skip, Stat, TierResult, hpcgpu_cmd, interleave, run as run_cmd, wait_for
from benchmarks.slurmjobs import ENDED, check_available, finish, job_id_of, job_state, sh, wait_idle

TITLE = "Slurm: time to the first step of the demo vs nodes (1 rank per node)"
NODE_COUNTS = (1, 2, 4, 8)
SMOKE_NODE_COUNTS = (1, 2)
POLL_S = 0.1


def first_step_name(nodes: int) -> str:
    """The per-node-count figure's name (benchmarks/plot.py reads the node count back from it)."""
    return f"time to first step, {nodes} node{'s' if nodes > 1 else ''}"


def parse_partitions(text: str) -> dict[str, int]:
    """{partition: node count} from `scontrol show partition -o` (one partition per line)."""
    parts = {}
    for line in text.splitlines():
        name, total = re.search(r"\bPartitionName=(\S+)", line), re.search(r"\bTotalNodes=(\d+)", line)
        if name and total:
            parts[name.group(1)] = int(total.group(1))
    return parts


def plan_counts(wanted: tuple, parts: dict[str, int]) -> tuple[str, list[int], list[int]]:
    """The partition with the most nodes (the first listed of equals), the wanted node counts that
    fit in it and those that do not."""
    if not parts:
        return "", [], list(wanted)
    best = max(parts, key=lambda p: (parts[p], -list(parts).index(p)))
    return best, [n for n in wanted if n <= parts[best]], [n for n in wanted if n > parts[best]]


def _submit(b: Bench, cwd: Path, partition: str, nodes: int, phases: list) -> float:
    """One submission of the demo on `nodes` nodes; seconds to the first step's end on the last rank."""
    name = f"bnd{nodes}-{uuid.uuid4().hex[:6]}"
    out = cwd / name
    spec = {"name": name,
            "entry": {"task": "benchmarks.workload:make_demo_task", "task_args": {"timing_dir": str(out), "n_eval": 0}},
            "resources": {"nodes": nodes, "gpus_per_node": 0, "procs_per_node": 1},
            "train": {"max_steps": 2}, "logging": {"tensorboard": False}}
    (cwd / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    wait_idle()
    t0 = time.time()
    p = run_cmd([*hpcgpu_cmd(), "submit", "slurm", "-f", f"{name}.yaml", "--partition", partition], b.env(), cwd,
                timeout=120)
    submitted = time.time() - t0
    job_id = job_id_of(p.stdout, name)
    if not job_id:
        raise RuntimeError(f"no job id in the output of hpcgpu submit slurm:\n{p.stdout[-1500:]}")
    running = []
    stamps = [out / f"rank{r}.json" for r in range(nodes)]

    def first_step_everywhere() -> bool:
        state = job_state(job_id)
        if not running and state == "RUNNING":
            running.append(time.time() - t0)
        if all(s.exists() for s in stamps):
            return True
        if state in ENDED and state != "":
            raise RuntimeError(f"job {job_id} ({nodes} nodes) ended {state} before every rank's first step"
                               f"{_log_tail(cwd, name)}")
        return False

    try:
        wait_for(first_step_everywhere, 300, f"the first step of job {job_id} on {nodes} nodes", interval=POLL_S)
        # the demo ends after its second step: let it, so the nodes are free for the next submission
        wait_for(lambda: job_state(job_id) in ENDED, 120, f"job {job_id} to end", interval=0.2)
    finally:
        finish(job_id)
    ranks = [json.loads(s.read_text()) for s in stamps]
    if len({r["host"] for r in ranks}) != nodes:
        raise RuntimeError(f"job {job_id}: {nodes} ranks ran on hosts {sorted(r['host'] for r in ranks)}, not one per node")
    phases.append({"submit": submitted, "running": running[0] if running else float("nan"),
                   "first_loss": max(r["first_loss"] for r in ranks) - t0})
    return max(r["first_step"] for r in ranks) - t0


def _log_tail(cwd: Path, name: str) -> str:
    logs = sorted(cwd.glob(f"runs/{name}*/**/*.log")) + sorted(cwd.glob(f"runs/{name}*/**/*.out"))
    return "".join(f"\n--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}" for p in logs[-4:])


def _median(phases: list, key: str) -> float:
    return statistics.median(p[key] for p in phases)


def run(b: Bench, result: TierResult) -> None:
    check_available(b)
    p = sh(["scontrol", "show", "partition", "-o"])
    parts = parse_partitions(p.stdout)
    partition, counts, skipped = plan_counts(SMOKE_NODE_COUNTS if b.smoke else NODE_COUNTS, parts)
    if not counts:
        raise Skip(f"no Slurm partition found (scontrol show partition: {p.stderr.strip()[:200] or 'nothing'})")
    if skipped:
        result.note = (f"Skipped {', '.join(map(str, skipped))} nodes: the largest partition, {partition}, has "
                       f"{parts[partition]} (`make slurm-up HPCGPU_SLURM_NODES=8` runs 8 nodes, in partition scale).")
    try:
        wait_idle(30 if b.smoke else 300)
    except RuntimeError as e:
        raise Skip(f"the cluster is busy with other jobs: {e}") from None
    cwd = b.workdir("tier11")
    if not b.smoke:  # unrecorded: page cache and Slurm's first-job costs
        _submit(b, cwd, partition, 1, [])
    phases = {n: [] for n in counts}
    samples = interleave(b.reps, {n: (lambda n=n: _submit(b, cwd, partition, n, phases[n])) for n in counts})
    one = Stat("hpcgpu submit slurm, 1 node", "s", samples[1]) if 1 in samples else None
    for n in counts:
        stat = Stat(f"hpcgpu submit slurm, {n} node{'s' if n > 1 else ''}", "s", samples[n])
        ratio = stat.median / one.median if one is not None and n > 1 else None
        result.figures.append(Figure(
            first_step_name(n), stat, one if n > 1 else None, ratio, f"{n} nodes / 1 node" if ratio else "",
            note=f"Partition {partition}. Medians from starting the submission: the command returned after "
                 f"{_median(phases[n], 'submit'):.2f} s, squeue showed RUNNING at {_median(phases[n], 'running'):.2f} s, "
                 f"the first loss call on the last rank at {_median(phases[n], 'first_loss'):.2f} s (after the Trainer's "
                 f"start-up: process group, model, data), the first step's end at {stat.median:.2f} s. squeue polled "
                 f"every {POLL_S} s; each repetition starts with every node idle."))
