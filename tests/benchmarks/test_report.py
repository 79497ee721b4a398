"""benchmarks/report.py: RESULTS.md links the scaling plot when one was written, and only then."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import REPO
from benchmarks.report import render_markdown


def doc() -> dict:
    machine = {"cpu": "c", "cores": 2, "usable_cores": 2, "mem_gib": 1.0, "gpu": None, "os": "linux", "python": "3",
               "torch": "2", "hpcgpu": "0", "commit": "abc", "dirty": False}
    return {"started": "2026-12-02T10:00:00", "elapsed_s": 1.0, "smoke": False, "reps": 3, "command": "make bench",
            "invocation": "make bench", "load_start": [0.1, 0.1, 0.1], "load_end": [0.1, 0.1, 0.1],
            "machine": machine, "tiers": []}


def test_results_link_the_plot_by_its_name_beside_them():
    md = render_markdown(doc(), REPO / "benchmarks" / "results" / "x.json", Path("/somewhere/out/scaling.png"))
    assert "![scaling plot](scaling.png)" in md
    assert "/somewhere" not in md  # relative: RESULTS.md and the PNG sit in the same folder


def test_no_plot_no_link():
    assert "scaling" not in render_markdown(doc(), REPO / "benchmarks" / "results" / "x.json")
