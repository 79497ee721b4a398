"""Results: machine facts, the JSON file of one run, and the Markdown summary rendered from it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

from benchmarks.harness import REPO


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("torch", "hpcgpu"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing package is a fact to record, not an error
            out[mod] = None
    return out


def machine_info() -> dict:
    """What the figures depend on: CPU, cores, memory, OS, versions, commit, GPU."""
    cuda = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda = {"device": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                    "cuda": torch.version.cuda}
    except Exception:
        pass
    return {"host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_gib": _mem_gib(), "os": platform.platform(), "gpu": cuda, **_versions(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}


def write_json(doc: dict, results_dir: Path) -> Path:
    """`<results_dir>/<timestamp>.json`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{doc['started'].replace(':', '')}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _num(x: Optional[float], unit: str = "") -> str:
    """Three significant digits (thousands separated), then the unit."""
    if x is None:
        return "—"
    if abs(x) >= 1000:
        s = f"{x:,.0f}"
    elif x == 0 or abs(x) >= 0.001:
        s = f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"
    else:
        s = f"{x:.2e}"
    return f"{s} {unit}".strip()


def _side(stat: Optional[dict]) -> str:
    if stat is None:
        return "—"
    return f"{stat['label']}: {_num(stat['median'], stat['unit'])}"


def _verdict(f: dict) -> str:
    if f["met"] is None:
        return "— (no target)"
    return f"**met** ({f['margin']})" if f["met"] else f"**missed** ({f['margin']})"


def render_markdown(doc: dict, json_path: Path, plot: Optional[Path] = None) -> str:
    """The summary: machine, the command to rerun, then one row per figure with target and pass/miss;
    `plot` (a PNG in the same folder as RESULTS.md) is linked under the figures."""
    m = doc["machine"]
    how = ("SMOKE run (tiny sizes, 1 repetition: not figures to quote)" if doc["smoke"]
           else f"median of {doc['reps']} repetitions per figure unless its tier says otherwise")
    lines = [
        "# hpcgpu benchmark results",
        "",
        f"Recorded {doc['started']} ({doc['elapsed_s']:.0f} s), {how}.",
        f"Raw data: `{_rel(json_path)}`. Rerun: `{doc['command']}`"
        + (f" (which runs `{doc['invocation']}`)." if doc["invocation"] != doc["command"] else "."),
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['mem_gib']} GiB RAM; GPU: "
        f"{m['gpu']['device'] + ' x' + str(m['gpu']['count']) if m['gpu'] else 'none'}",
        f"- {m['os']}; Python {m['python']}, torch {m['torch']}, hpcgpu {m['hpcgpu']} "
        f"(commit {m['commit']}{', with uncommitted changes' if m['dirty'] else ''})",
        f"- Load average (1, 5, 15 min): at start {_load(doc['load_start'])}, at end {_load(doc['load_end'])}"
        + (" — **the machine was busy: figures are noisy**" if max(doc["load_start"][0], doc["load_end"][0]) > 1.5 else ""),
        "",
        "## Figures",
        "",
        "Ratio = measured / reference medians unless the ratio column says otherwise.",
        "",
        "| tier | figure | measured | reference | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in doc["tiers"]:
        if t["status"] != "ok":
            lines.append(f"| {t['tier']} | {t['title']} | {t['status']} | | | | {_one_line(t['note'])} |")
            continue
        for f in t["figures"]:
            ratio = f"{_num(f['ratio'])} ({f['ratio_label']})" if f["ratio"] is not None else "—"
            lines.append(f"| {t['tier']} | {f['name']} | {_side(f['measured'])} | {_side(f['reference'])} | "
                         f"{ratio} | {f['target'] or '—'} | {_verdict(f)} |")
    if plot is not None:
        lines += ["", f"Scaling (tiers 10, 11 and 1's `hpcgpu status`): ![scaling plot]({plot.name})"]
    lines += ["", "## Notes per tier", ""]
    for t in doc["tiers"]:
        lines.append(f"**Tier {t['tier']}: {t['title']}** ({t['status']}, {t['seconds']:.0f} s). {t['note']}".rstrip())
        for f in t["figures"]:
            if f["note"]:
                lines.append(f"- {f['name']}: {f['note']}")
        lines.append("")
    missed = [(t["tier"], f) for t in doc["tiers"] for f in t["figures"] if f["met"] is False]
    lines += ["## Targets", ""]
    if missed:
        for tier, f in missed:
            lines.append(f"- Tier {tier}, {f['name']}: ratio {_num(f['ratio'])} against target {f['target']}, "
                         f"missed by {f['margin'].lstrip('-')} of the bound.")
        lines.append("- What profiling showed for each miss: see `benchmarks/PROFILING.md`.")
    else:
        lines.append("Every figure with a target met it in this run.")
    return "\n".join(lines) + "\n"


def _load(la: list) -> str:
    return ", ".join(f"{x:.2f}" for x in la)


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")[:300]


def _rel(path: Path) -> str:
    """path relative to the checkout (as typed, then resolved): no machine's absolute paths in RESULTS.md."""
    for candidate, root in ((Path(os.path.abspath(path)), Path(os.path.abspath(REPO))), (path.resolve(), REPO.resolve())):
        try:
            return str(candidate.relative_to(root))
        except ValueError:
            continue
    return str(path)


def command_line(argv: list[str], smoke: bool) -> tuple[str, str]:
    """How to rerun: the make target when make started us, and the exact module invocation."""
    direct = f"{_rel(Path(sys.executable))} -m benchmarks {' '.join(argv)}".strip()
    if os.environ.get("MAKELEVEL"):
        return f"make {'bench-smoke' if smoke else 'bench'}", direct
    return direct, direct
