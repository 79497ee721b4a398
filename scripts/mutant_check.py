"""Which of some mutants do these tests kill? A quick check while writing tests, without a mutmut run.

    .venv/bin/python scripts/mutant_check.py NAMES_FILE TEST_PATH [TEST_PATH...]

NAMES_FILE: mutant names, one per line (as `scripts/mutation_report.py` lists survivors; text after
the name and lines starting with # are ignored). Each mutant's diff comes from `mutmut show NAME`
(run where the last `make mutate` left mutants/, default this checkout: --mutmut-dir), is applied
to this checkout with `patch`, the given tests run (fast-tier markers, stop at the first failure),
and the file is restored from git. Prints KILLED / SURVIVED / NOAPPLY per mutant, then the counts.
A mutated file with uncommitted changes is refused: restoring it from git would lose them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

FAST_TIER = "not slow and not slurm and not container and not gpu"


def mutant_diff(mutmut: str, mutmut_dir: str, name: str) -> tuple[str, str]:
    """(path of the mutated file, unified diff) of one mutant."""
    out = subprocess.run([mutmut, "show", name], cwd=mutmut_dir, capture_output=True, text=True).stdout
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("--- ")), None)
    if start is None:
        raise SystemExit(f"mutant_check: `mutmut show {name}` in {mutmut_dir} printed no diff")
    return lines[start][4:].strip(), "\n".join(lines[start:]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names_file")
    parser.add_argument("tests", nargs="+")
    parser.add_argument("--mutmut-dir", default=".", help="where `mutmut show` finds mutants/ (default: here)")
    args = parser.parse_args()
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    names = [line.split()[0] for line in Path(args.names_file).read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop("MUTANT_UNDER_TEST", None)
    counts: dict[str, int] = {}
    for name in names:
        path, diff = mutant_diff(mutmut, args.mutmut_dir, name)
        if subprocess.run(["git", "diff", "--quiet", "--", path]).returncode != 0:
            raise SystemExit(f"mutant_check: {path} has uncommitted changes; commit them first")
        patch = ["patch", "-p0", "-s", "--no-backup-if-mismatch"]
        if subprocess.run([*patch, "--dry-run"], input=diff, text=True, capture_output=True).returncode:
            verdict = "NOAPPLY"
        else:
            subprocess.run(patch, input=diff, text=True, check=True, capture_output=True)
            try:
                rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                     "-m", FAST_TIER, *args.tests], env=env, capture_output=True).returncode
            finally:
                subprocess.run(["git", "checkout", "--", path], check=True)
            verdict = {0: "SURVIVED", 1: "KILLED"}.get(rc, f"ERROR{rc}")  # 2-5: pytest could not run them
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{verdict:8} {name}", flush=True)
    print(", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
