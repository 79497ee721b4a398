"""Score of the last `make mutate` run, per module: killed / (mutants - listed equivalents).

Reads mutmut's per-file results (mutants/**/*.py.meta) and tests/mutation_equivalents.txt, prints a
Markdown table for docs/development.md, then every survivor that is not listed as equivalent (see
one with `mutmut show NAME`). Exits 1 when the total is under --min-score, or when the equivalents
list names a mutant that no longer exists or was killed (the list must stay true).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.txt"

#: mutmut's exit codes, as mutmut.stats.status_by_exit_code reads them; a timeout or crash is a kill
KILLED_CODES = {1, 3, 36, -24, 24, 152, 255, -11, -9, 37}
SURVIVED_CODES = {0, 5, 33}  # "no tests" reach the mutant: nothing would notice it either


def load_results(mutants_dir: Path) -> dict[str, int | None]:
    results: dict[str, int | None] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def load_equivalents(path: Path) -> dict[str, str]:
    """`NAME  # reason` per line; blank lines and lines starting with # are comments."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1) if path.exists() else ():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, reason = line.partition("#")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{n}: give the reason after '#': {line!r}")
        out[name.strip()] = reason.strip()
    return out


def module_of(name: str) -> str:
    """hpcgpu.host.envvars.x_debug_defaults__mutmut_3 -> hpcgpu.host.envvars"""
    return name.rsplit(".", 1)[0]


def classify(code: int | None) -> str:
    if code is None:
        return "not run"
    if code in KILLED_CODES:
        return "killed"
    if code in SURVIVED_CODES:
        return "survived"
    return "suspicious"


def report(results: dict[str, int | None], equivalents: dict[str, str]) -> tuple[str, list[str], list[str], float]:
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors, stale = [], []
    for name, code in results.items():
        status = classify(code)
        if name in equivalents and status != "not run":
            if status != "survived":
                stale.append(f"{name}: listed as equivalent but {status}")
            status = "equivalent"
        elif status not in ("killed", "not run"):
            survivors.append(f"{name} ({status})")
        per_module[module_of(name)][status] += 1
    stale += [f"{name}: listed as equivalent but no such mutant" for name in equivalents if name not in results]
    lines = ["| module | mutants | killed | equivalent | survived | not run | score |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    total: Counter = Counter()
    for module in sorted(per_module):
        c = per_module[module]
        total.update(c)
        lines.append(_row(f"`{module}`", c))
    lines.append(_row("**all core modules**", total))
    return "\n".join(lines), survivors, stale, _score(total)


def _score(c: Counter) -> float:
    """Killed out of the mutants that ran and can change behaviour (a partial run scores what ran)."""
    counted = sum(c.values()) - c["equivalent"] - c["not run"]
    return 100.0 * c["killed"] / counted if counted else 100.0


def _row(label: str, c: Counter) -> str:
    survived = sum(c.values()) - c["killed"] - c["equivalent"] - c["not run"]
    return (f"| {label} | {sum(c.values())} | {c['killed']} | {c['equivalent']} | {survived} | {c['not run']} "
            f"| {f'{_score(c):.1f}%' if survived + c['killed'] else 'not run'} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants", help="mutmut's work folder")
    parser.add_argument("--min-score", type=float, default=0.0, help="fail under this total score (percent)")
    args = parser.parse_args(argv)
    results = load_results(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}: run `make mutate` first", file=sys.stderr)
        return 1
    table, survivors, stale, score = report(results, load_equivalents(EQUIVALENTS))
    print(table)
    if survivors:
        print(f"\n{len(survivors)} mutants survived (see one with `.venv/bin/mutmut show NAME`):")
        print("\n".join(f"  {s}" for s in survivors))
    if stale:
        print(f"\n{EQUIVALENTS.name} is out of date:\n" + "\n".join(f"  {s}" for s in stale), file=sys.stderr)
    if score < args.min_score:
        print(f"\nscore {score:.1f}% is under --min-score {args.min_score}%", file=sys.stderr)
    return 1 if stale or score < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
