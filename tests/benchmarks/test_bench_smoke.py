"""`make bench-smoke`: every benchmark tier runs and writes well-formed results.

Never asserts that a figure meets its target: CI machines are noisy, and benchmarks are not timed tests.

Two runs of the target: tiers 8 and 11 (Slurm jobs) on their own, with the Slurm tests under xdist and the
cluster to itself, since they need every node idle; every other tier in one run beside the rest of the suite, so the
minute and a half they take does not wait behind the Slurm tests (make test's longest chain).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.__main__ import TIERS as RUNNER_TIERS, parse_args

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIERS = set(range(1, 12))
CLUSTER_TIERS = {8, 11}
STATUSES = {"ok", "skipped", "error"}


def _check_stat(stat: dict, where: str) -> None:
    assert set(stat) >= {"label", "unit", "samples", "median"}, where
    assert stat["samples"] and all(isinstance(x, (int, float)) and math.isfinite(x) for x in stat["samples"]), where
    assert math.isfinite(stat["median"]) and stat["median"] >= 0, where


def _check_figure(fig: dict, where: str) -> None:
    _check_stat(fig["measured"], where)
    if fig["reference"] is not None:
        _check_stat(fig["reference"], where)
        assert fig["ratio"] is not None and math.isfinite(fig["ratio"]), where
    if fig["target"] is not None:
        op, bound = fig["target"].split()
        assert op in ("<=", ">=") and float(bound) > 0, where
        assert isinstance(fig["met"], bool), where  # evaluated, whatever the verdict
    else:
        assert fig["met"] is None, where


def _errored_tier_notes(out: Path) -> str:
    """The whole note of every tier that errored (the JSON is written even when the run fails)."""
    notes = []
    for path in (out / "results").glob("*.json"):
        for tier in json.loads(path.read_text())["tiers"]:
            if tier["status"] == "error":
                notes.append(f"\n--- tier {tier['tier']} error note ---\n{tier['note']}")
    return "".join(notes)


def bench_smoke(out: Path, tiers: set[int]) -> tuple[dict, str]:
    """`make bench-smoke` of these tiers into out: the results document and RESULTS.md, checked for
    what every run writes whatever its tiers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCGPU_", "MAKEFLAGS", "MFLAGS"))}
    args = f"BENCH_ARGS=--tiers {','.join(map(str, sorted(tiers)))}"
    p = subprocess.run(["make", "--no-print-directory", "bench-smoke", f"BENCH_SMOKE_OUT={out}", args], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:] + _errored_tier_notes(out)

    (json_path,) = (out / "results").glob("*.json")
    doc = json.loads(json_path.read_text())
    assert doc["smoke"] is True and doc["reps"] == 1
    assert doc["command"] == "make bench-smoke"
    assert {"cpu", "cores", "torch", "python", "commit"} <= set(doc["machine"])
    assert len(doc["load_start"]) == 3 and len(doc["load_end"]) == 3
    assert {t["tier"] for t in doc["tiers"]} == tiers
    for tier in doc["tiers"]:
        n = tier["tier"]
        assert tier["status"] in STATUSES, n
        assert tier["status"] != "error", f"tier {n} failed:\n{tier['note']}"
        if tier["status"] == "skipped":
            assert tier["note"].strip(), f"tier {n} skipped without saying why"
            continue
        assert tier["figures"], f"tier {n} produced no figures"
        for fig in tier["figures"]:
            _check_figure(fig, f"tier {n}: {fig['name']}")

    md = (out / "RESULTS.md").read_text()
    assert "make bench-smoke" in md and "| tier | figure |" in md and "Load average" in md
    for n in tiers:
        assert f"Tier {n}:" in md
    return doc, md


def test_bench_smoke_runs_every_tier_by_default():
    # `make bench-smoke` without BENCH_ARGS: the runner's default is every tier it knows, 1 to 11
    assert set(RUNNER_TIERS) == TIERS
    assert {int(t) for t in parse_args(["--smoke"]).tiers.split(",")} == TIERS
    assert "$(PY) -m benchmarks --smoke --out $(BENCH_SMOKE_OUT) $(BENCH_ARGS)" in (REPO / "benchmarks" / "bench.mk").read_text()


def test_bench_smoke_writes_well_formed_results(tmp_path):
    doc, md = bench_smoke(tmp_path / "bench", TIERS - CLUSTER_TIERS)
    tiers = {t["tier"]: t for t in doc["tiers"]}
    # Tiers 1-7 and 10 need nothing but this machine; 9 needs a GPU.
    assert all(tiers[n]["status"] == "ok" for n in (*range(1, 8), 10)), {n: tiers[n]["status"] for n in tiers}
    targets = {(n, f["name"]) for n, t in tiers.items() for f in t["figures"] if f["target"]}
    assert {(1, "hpcgpu --help vs python -c pass"), (2, "time to first step"),
            (3, "Trainer steps/s vs hand-written DDP loop")} <= targets
    # tier 10 in smoke: 2 ranks (the multi-rank path; 1 rank runs the same code) resumed against a fresh
    # launch, and the cold read
    names = {f["name"] for f in tiers[10]["figures"]}
    assert {"resume overhead vs one cold read, 2 ranks", "one cold read of the checkpoint"} <= names, names
    # the scaling plot (tiers 1 and 10 ran) beside RESULTS.md and linked from it, where matplotlib is installed
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "bench" / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "](scaling.png)" in md
    else:
        assert not (tmp_path / "bench" / "scaling.png").exists() and "scaling.png" not in md


@pytest.mark.xdist_group("slurm")  # with the Slurm tests; they need every node idle, so no other Slurm test runs
def test_bench_smoke_tier_8_submits_to_the_local_cluster(slurm_cluster_to_itself, tmp_path):
    # tier 11 too: the demo on 1 and 2 nodes
    doc, _ = bench_smoke(tmp_path / "bench", CLUSTER_TIERS)
    tiers = {t["tier"]: t for t in doc["tiers"]}
    if os.environ.get("HPCGPU_REQUIRE_SLURM") == "1":  # make test: the cluster is up, and the Slurm tests are not running
        assert tiers[8]["status"] == "ok", tiers[8]["note"]
        assert tiers[11]["status"] == "ok", tiers[11]["note"]
        assert [f["name"] for f in tiers[11]["figures"]] == ["time to first step, 1 node", "time to first step, 2 nodes"]
