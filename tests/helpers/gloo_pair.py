"""Two gloo ranks on CPU, started once per test session for every module's rank-side workload.

tests/worker/test_evaluation.py (an uneven evaluation set over two ranks) and
tests/worker/test_worker_strategy.py (FSDP2 sharding before placement) each need two processes in
one process group and nothing else from them, and each rank process costs a torch start-up. So one
pair runs every workload of WORKLOADS in turn, in one process group, and each module reads its own
results (tests/helpers/session_once.py: whichever pytest-xdist worker asks first starts the pair).

A workload is a function (rank, world_size) -> a JSON-serialisable value, named "module:function"; a
workload that raises is recorded as {"error": <traceback>} and the next one still runs, so a defect
fails the test that owns it, not its neighbour.
"""

from __future__ import annotations

import importlib
import json
import os
import traceback
from pathlib import Path

import pytest

from tests.helpers.session_once import session_once

WORKLOADS = (
    "tests.worker.test_evaluation:two_rank_evaluation",
    "tests.worker.test_worker_strategy:fsdp_sharding_on_two_ranks",
)
WORLD = 2


def _rank(rank: int, world: int, store_path: str, out_dir: str) -> None:
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(1)
    # loopback for this pair only: set in the pytest worker, it would reach every later launch there
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    tdist.init_process_group("gloo", store=tdist.FileStore(store_path, world), rank=rank, world_size=world)
    results = {}
    try:
        for name in WORKLOADS:
            module, function = name.split(":")
            try:
                results[name] = getattr(importlib.import_module(module), function)(rank, world)
            except Exception:  # noqa: BLE001 - reported by the test that owns the workload
                results[name] = {"error": traceback.format_exc()}
    finally:
        tdist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))


def _run_pair(out: Path) -> dict:
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(WORLD, str(out / "store"), str(out)), nprocs=WORLD, join=True)
    per_rank = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    return {name: [results[name] for results in per_rank] for name in WORKLOADS}


def gloo_pair_results(tmp_path_factory: pytest.TempPathFactory, workload: str) -> list:
    """What the workload returned on each rank (rank 0 first), or {"error": ...} where it raised."""
    assert workload in WORKLOADS, f"add {workload} to tests/helpers/gloo_pair.py WORKLOADS"
    results = session_once(tmp_path_factory, "gloo-pair-workloads",
                           lambda: _run_pair(tmp_path_factory.mktemp("gloo-pair")))
    return results[workload]
