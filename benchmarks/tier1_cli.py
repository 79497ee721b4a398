"""Tier 1: CLI start. `hpcgpu --help` wall time vs `python -c pass`, `torchrun --help`, `accelerate --help`."""

from __future__ import annotations

import shutil
import sys

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
