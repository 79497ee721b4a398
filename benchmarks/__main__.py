"""`python -m benchmarks`: run the tiers, write `results/<timestamp>.json` and `RESULTS.md`.

    python -m benchmarks                    # tiers 1-11 (9 skips itself without CUDA), 5 repetitions
    python -m benchmarks --smoke --out DIR  # tiny sizes, 1 repetition: checks the suite works
    python -m benchmarks --tiers 2,3 --reps 3
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.harness import Bench, Skip, TierResult
from benchmarks.plot import PNG, write_plot
from benchmarks.report import command_line, machine_info, render_markdown, write_json

HERE = Path(__file__).resolve().parent
TIERS = {1: "tier1_cli", 2: "tier2_launch", 3: "tier3_trainer", 4: "tier4_scaling", 5: "tier5_allreduce",
         6: "tier6_checkpoint", 7: "tier7_failure", 8: "tier8_slurm", 9: "tier9_gpu",
         10: "tier10_resume", 11: "tier11_nodes"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes and 1 repetition (CI: the suite works)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 5; smoke 1)")
    p.add_argument("--tiers", default=",".join(map(str, TIERS)), help="comma-separated tiers (default all)")
    p.add_argument("--out", type=Path, default=HERE,
                   help="where results/<timestamp>.json and RESULTS.md go (default benchmarks/)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (run dirs, logs)")
    return p.parse_args(argv)


def run_tier(n: int, bench: Bench) -> TierResult:
    """Import and run one tier; a Skip or an exception becomes its status, never the end of the suite."""
    mod = importlib.import_module(f"benchmarks.{TIERS[n]}")
    result = TierResult(n, mod.TITLE)
    t0 = time.perf_counter()
    try:
        mod.run(bench, result)
    except Skip as e:
        result.status, result.note = "skipped", f"{result.note} {e}".strip()
    except Exception:
        result.status, result.note = "error", traceback.format_exc()[-3000:]
    result.seconds = time.perf_counter() - t0
    return result


def _status_detail(r: TierResult) -> str:
    """A skip's reason on the same line; an error's whole note (traceback, the failed command's output),
    indented, because its last line alone (often torchrun's '=====' rule) says nothing."""
    note = r.note.strip()
    if r.status == "skipped":
        return note.splitlines()[-1][:200] if note else ""
    if r.status == "error":
        return "\n" + "\n".join("    | " + line for line in note.splitlines())
    return ""


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    tiers = [int(t) for t in args.tiers.split(",") if t.strip()]
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        sys.exit(f"unknown tier(s) {unknown}; known: {sorted(TIERS)}")
    reps = args.reps or (1 if args.smoke else 5)
    scratch_root = HERE / "results" / "tmp"  # on the repo's disk (not a tmpfs): fsync means something
    scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=scratch_root))
    bench = Bench(smoke=args.smoke, reps=reps, scratch=scratch)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    results = []
    for n in tiers:
        print(f"bench: tier {n} ...", file=sys.stderr, flush=True)
        r = run_tier(n, bench)
        results.append(r)
        print(f"bench: tier {n} {r.status} in {r.seconds:.1f} s {_status_detail(r)}", file=sys.stderr, flush=True)
        for f in r.figures:
            print(f"  {f.name}: {f.measured.median:.4g} {f.measured.unit}"
                  + (f" vs {f.reference.median:.4g} {f.reference.unit}, ratio {f.ratio:.3f}" if f.ratio is not None else "")
                  + (f", target {f.target}: {'met' if f.met else 'MISSED'}" if f.target else ""), file=sys.stderr)
    command, invocation = command_line(argv, args.smoke)
    doc = {"started": started, "elapsed_s": time.perf_counter() - t0, "smoke": args.smoke, "reps": reps,
           "command": command, "invocation": invocation, "load_start": load_start, "load_end": list(os.getloadavg()),
           "machine": machine_info(), "tiers": [r.to_json() for r in results]}
    json_path = write_json(doc, args.out / "results")
    md_path = args.out / "RESULTS.md"
    plot = write_plot(doc, args.out / PNG)  # None when tiers 1, 10, 11 did not run, or without matplotlib
    md_path.write_text(render_markdown(doc, json_path, plot))
    print(f"bench: wrote {json_path}{', ' + str(plot) if plot else ''} and {md_path} ({doc['elapsed_s']:.0f} s)",
          file=sys.stderr)
    if args.keep:
        print(f"bench: scratch kept in {scratch}", file=sys.stderr)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
