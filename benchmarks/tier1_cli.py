"""Tier 1: CLI start. `hpcgpu --help` wall time vs `python -c pass`, `torchrun --help`, `accelerate --help`;
and `hpcgpu status` (the list, and one run by id) with 10,000 runs in the index vs 10."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from benchmarks.harness import BIN, Bench, Stat, TierResult, compare, hpcgpu_cmd, interleave, timed

TITLE = "CLI start (`hpcgpu --help`)"


def _accelerate() -> list[str] | None:
    exe = BIN / "accelerate"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("accelerate")
    return [found] if found else None


def run(b: Bench, result: TierResult) -> None:
    env, cwd = b.env(), b.workdir("tier1")
    cmds = {"python -c pass": [sys.executable, "-c", "pass"],
            "hpcgpu --help": [*hpcgpu_cmd(), "--help"],
            "torchrun --help": [str(BIN / "torchrun") if (BIN / "torchrun").exists() else sys.executable,
                                *([] if (BIN / "torchrun").exists() else ["-m", "torch.distributed.run"]), "--help"]}
    acc = _accelerate()
    if acc:
        cmds["accelerate --help"] = [*acc, "--help"]
    else:
        result.note = "accelerate is not installed here: its comparison is left out (the suite never installs it)."
    if not b.smoke:
        for argv in cmds.values():  # warm the page cache once; not counted
            timed(argv, env, cwd)
    reps = max(b.reps, 3) if not b.smoke else 1
    samples = interleave(reps, {name: (lambda a=argv: timed(a, env, cwd)) for name, argv in cmds.items()})
    stats = {name: Stat(name, "s", s) for name, s in samples.items()}
    hp = stats["hpcgpu --help"]
    result.figures.append(compare("hpcgpu --help vs python -c pass", hp, stats["python -c pass"],
                                  "hpcgpu / python", "<= 3"))
    result.figures.append(compare("hpcgpu --help vs torchrun --help", hp, stats["torchrun --help"],
                                  "torchrun / hpcgpu (speed-up)", ">= 10", invert=True))
    if "accelerate --help" in stats:
        result.figures.append(compare("hpcgpu --help vs accelerate --help", hp, stats["accelerate --help"],
                                      "accelerate / hpcgpu (speed-up)", invert=True))
    status_at_scale(b, result)


#: runs in the big index (the issue's figure) and the small one it is compared with
BIG_INDEX, SMALL_INDEX = 10_000, 10


def make_index(home: Path, runs: Path, count: int) -> str:
    """An index of `count` ended local runs (run.json + result.json each); the id of the middle one."""
    home.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        run_id = f"bench-20260101-{i:06d}-abcd"
        run_dir = runs / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"id": run_id, "run_dir": str(run_dir), "backend": "local", "created": 0.0, "nodes": 1,
                  "job_id": None, "pid": None, "pid_start": None, "host": "bench"}
        (run_dir / "run.json").write_text(json.dumps(record))
        (run_dir / "result.json").write_text('{"exit_code": 0, "ended": 0}')
        lines.append(json.dumps(record))
    (home / "runs.jsonl").write_text("\n".join(lines) + "\n")
    return f"bench-20260101-{count // 2:06d}-abcd"


def status_at_scale(b: Bench, result: TierResult) -> None:
    """`hpcgpu status` must not grow with the index: the list reads only the newest runs' files, a
    run by id only its own."""
    cwd = b.workdir("tier1-status")
    sides = {}
    for count in (SMALL_INDEX, BIG_INDEX):
        home = cwd / f"home{count}"
        middle = make_index(home, cwd / f"runs{count}", count if not b.smoke else min(count, 500))
        env = b.env(HPCGPU_HOME=str(home))
        sides[f"status, {count} runs"] = lambda e=env: timed([*hpcgpu_cmd(), "status"], e, cwd)
        sides[f"status RUN, {count} runs"] = lambda e=env, m=middle: timed([*hpcgpu_cmd(), "status", m], e, cwd)
    reps = max(b.reps, 3) if not b.smoke else 1
    stats = {name: Stat(name, "s", s) for name, s in interleave(reps, sides).items()}
    big, small = f"{BIG_INDEX} runs", f"{SMALL_INDEX} runs"
    result.figures.append(compare(f"hpcgpu status, {big} in the index vs {small}", stats[f"status, {big}"],
                                  stats[f"status, {small}"], "big / small", "<= 1.25",
                                  note=f"absolute: {stats[f'status, {big}'].median:.3f} s (target < 0.5 s)"))
    result.figures.append(compare(f"hpcgpu status RUN, {big} in the index vs {small}", stats[f"status RUN, {big}"],
                                  stats[f"status RUN, {small}"], "big / small", "<= 1.25",
                                  note=f"absolute: {stats[f'status RUN, {big}'].median:.3f} s"))
