"""benchmarks/plot.py: the scaling plot's points come from the figures tiers 1, 10 and 11 write; the PNG
is written where matplotlib is installed and left out with a message where it is not."""

from __future__ import annotations

import sys

import pytest

from benchmarks.plot import PNG, has_points, series, write_plot
from benchmarks.tier10_resume import overhead_name
from benchmarks.tier11_nodes import first_step_name


def stat(median: float, label: str = "x") -> dict:
    return {"label": label, "unit": "s", "samples": [median], "median": median}


def figure(name: str, measured: float, reference: float | None = None) -> dict:
    return {"name": name, "measured": stat(measured), "reference": stat(reference) if reference is not None else None}


def sample_doc() -> dict:
    """A results document as `python -m benchmarks` writes it, with the figure names made by the tiers' own
    functions (a renamed figure would silently drop out of the plot otherwise)."""
    return {"started": "2026-12-02T10:00:00", "smoke": False, "tiers": [
        {"tier": 1, "status": "ok", "figures": [
            figure("hpcgpu --help vs python -c pass", 0.2, 0.05),
            figure("hpcgpu status, 10000 runs in the index vs 10 runs", 0.30, 0.25),
            figure("hpcgpu status RUN, 10000 runs in the index vs 10 runs", 0.22, 0.21)]},
        {"tier": 10, "status": "ok", "figures": [
            figure(overhead_name(2), 6.0, 5.5), figure(overhead_name(1), 3.4, 3.0), figure(overhead_name(4), 9.6, 9.0),
            figure("one cold read of the checkpoint", 0.25),
            figure("resume overhead growth, 4 ranks / 1 rank", 9.6, 3.4)]},
        {"tier": 11, "status": "ok", "figures": [
            figure(first_step_name(1), 7.0), figure(first_step_name(2), 8.0, 7.0), figure(first_step_name(8), 15.0, 7.0)]},
    ]}


def test_series_reads_each_tiers_points_sorted_by_size():
    s = series(sample_doc())
    assert s["resume"] == [(1, pytest.approx(0.4)), (2, pytest.approx(0.5)), (4, pytest.approx(0.6))]
    assert s["cat"] == 0.25
    assert s["nodes"] == [(1, 7.0), (2, 8.0), (8, 15.0)]
    assert s["status"] == {"status": [(10, 0.25), (10000, 0.30)], "status RUN": [(10, 0.21), (10000, 0.22)]}


def test_series_leaves_out_tiers_that_did_not_run():
    doc = sample_doc()
    for tier in doc["tiers"]:
        tier["status"] = "skipped" if tier["tier"] == 11 else "error"
    s = series(doc)
    assert not has_points(s) and s["cat"] is None


def test_the_png_is_written_from_a_results_document(tmp_path):
    pytest.importorskip("matplotlib")
    out = write_plot(sample_doc(), tmp_path / "sub" / PNG)
    assert out == tmp_path / "sub" / PNG
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_without_matplotlib_the_plot_is_left_out_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert write_plot(sample_doc(), tmp_path / PNG) is None
    assert not (tmp_path / PNG).exists()
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_nothing_to_plot_writes_nothing_and_says_nothing(tmp_path, capsys):
    doc = {"started": "t", "smoke": True, "tiers": [{"tier": 2, "status": "ok", "figures": [figure("time to first step", 3.0, 2.9)]}]}
    assert write_plot(doc, tmp_path / PNG) is None
    assert not (tmp_path / PNG).exists() and capsys.readouterr().err == ""


def test_a_plot_that_fails_is_reported_not_raised(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the PNG's folder should be")
    assert write_plot(sample_doc(), blocked / PNG) is None
    assert f"{PNG} not written" in capsys.readouterr().err
