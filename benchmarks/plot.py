"""The scaling plot: one PNG from a results JSON, with what tiers 10, 11 and 1 measured against a size:
resume overhead vs ranks, time to the first step vs Slurm nodes, `hpcgpu status` vs runs in the index.

    python -m benchmarks.plot benchmarks/results/<timestamp>.json [--out scaling.png]

`python -m benchmarks` writes it next to RESULTS.md (which links it) when those tiers ran. matplotlib
is optional (`pip install -e ".[bench]"`): without it the plot is left out with a message, never an error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Optional

PNG = "scaling.png"
# The figure names the tiers write (tier10_resume.overhead_name, tier11_nodes.first_step_name, tier1_cli
# status_at_scale); tests/benchmarks/test_plot.py checks them against the tiers' own functions.
_RESUME = re.compile(r"^resume overhead vs one cold read, (\d+) ranks?$")
_NODES = re.compile(r"^time to first step, (\d+) nodes?$")
_STATUS = re.compile(r"^hpcgpu (status(?: RUN)?), (\d+) runs in the index vs (\d+) runs$")
_CAT = "one cold read of the checkpoint"


def series(doc: dict) -> dict:
    """The points to plot, from the tiers that ran (status ok), sorted by x:
    resume: [(ranks, overhead s)], cat: the cold read's seconds (or None), nodes: [(nodes, s)],
    status: {"status": [(runs, s)], "status RUN": [(runs, s)]}."""
    out: dict = {"resume": [], "cat": None, "nodes": [], "status": {}}
    for tier in doc.get("tiers", []):
        if tier["status"] != "ok":
            continue
        for f in tier["figures"]:
            measured = f["measured"]["median"]
            reference = f["reference"]["median"] if f["reference"] else None
            if tier["tier"] == 10 and (m := _RESUME.match(f["name"])) and reference is not None:
                out["resume"].append((int(m.group(1)), measured - reference))
            elif tier["tier"] == 10 and f["name"] == _CAT:
                out["cat"] = measured
            elif tier["tier"] == 11 and (m := _NODES.match(f["name"])):
                out["nodes"].append((int(m.group(1)), measured))
            elif tier["tier"] == 1 and (m := _STATUS.match(f["name"])) and reference is not None:
                out["status"].setdefault(m.group(1), []).extend(
                    [(int(m.group(3)), reference), (int(m.group(2)), measured)])
    for key in ("resume", "nodes"):
        out[key].sort()
    for key in out["status"]:
        out["status"][key] = sorted(set(out["status"][key]))
    return out


def has_points(s: dict) -> bool:
    return bool(s["resume"] or s["nodes"] or s["status"])


def write_plot(doc: dict, path: Path) -> Optional[Path]:
    """Write the PNG to `path`; None (and a line on stderr saying why) when there is nothing to plot or
    matplotlib is not installed."""
    s = series(doc)
    if not has_points(s):
        return None  # tiers 1, 10 and 11 did not run: nothing to say
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a build machine
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"bench: {path.name} not written: matplotlib is not installed (pip install -e '.[bench]')",
              file=sys.stderr)
        return None
    try:
        _draw(plt, doc, s, path)
    except Exception as e:  # the results are written already: a plot that fails must not fail the run
        print(f"bench: {path.name} not written: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return path


def _draw(plt, doc: dict, s: dict, path: Path) -> None:
    panels = [draw for key, draw in (("resume", _resume_panel), ("nodes", _nodes_panel), ("status", _status_panel))
              if s[key]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    try:
        for panel, ax in zip(panels, axes[0]):
            panel(ax, s)
            ax.grid(True, alpha=0.3)
        title = f"hpcgpu scaling, {doc.get('started', '')}"
        if doc.get("smoke"):
            title += " (SMOKE run: tiny sizes, not figures to quote)"
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _resume_panel(ax, s: dict) -> None:
    x, y = zip(*s["resume"])
    ax.plot(x, y, "o-", label="resumed - fresh launch")
    if s["cat"] is not None:
        ax.axhline(s["cat"], linestyle="--", color="gray", label="cat of the checkpoint (cold)")
    ax.set(title="Tier 10: resume overhead", xlabel="ranks", ylabel="seconds", xticks=list(x))
    ax.legend(fontsize=8)


def _nodes_panel(ax, s: dict) -> None:
    x, y = zip(*s["nodes"])
    ax.plot(x, y, "o-")
    ax.set(title="Tier 11: time to first step (Slurm)", xlabel="nodes (1 rank each)", ylabel="seconds",
           xticks=list(x))
    ax.set_ylim(bottom=0)


def _status_panel(ax, s: dict) -> None:
    for label, points in sorted(s["status"].items()):
        x, y = zip(*points)
        ax.plot(x, y, "o-", label=f"hpcgpu {label}")
    ax.set_xscale("log")
    ax.set(title="Tier 1: hpcgpu status", xlabel="runs in the index", ylabel="seconds")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a results JSON (benchmarks/results/<timestamp>.json)")
    p.add_argument("--out", type=Path, default=None, help=f"the PNG (default: {PNG} beside the JSON's folder)")
    args = p.parse_args(argv)
    out = args.out or args.results.resolve().parent.parent / PNG
    doc = json.loads(args.results.read_text())
    if not has_points(series(doc)):
        print("bench: no figures of tiers 1, 10 or 11 in this file: nothing to plot", file=sys.stderr)
    elif write_plot(doc, out) is not None:
        print(f"bench: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
