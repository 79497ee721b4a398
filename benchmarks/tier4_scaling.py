"""Tier 4: scaling. Samples/s of the built-in Trainer on 2 ranks vs 1 rank, one thread per rank,
the same batch per rank (weak scaling); efficiency = ratio / 2."""

from __future__ import annotations

from benchmarks.harness import Bench, Stat, TierResult, compare, interleave
from benchmarks.tier3_trainer import last_trainer_rates, run_trainer, workload

TITLE = "Scaling: 2 ranks vs 1 rank, samples/s (1 thread per rank)"


def run(b: Bench, result: TierResult) -> None:
    cfg = workload(b)
    reps = b.reps if b.smoke else max(3, b.reps - 2)
    sps = {1: [], 2: []}

    def measure(nproc: int) -> float:
        rate = run_trainer(b, f"tier4/n{nproc}", cfg, nproc, []) * cfg["batch_size"] * nproc
        return rate

    smoke_note = ""
    if b.smoke and last_trainer_rates.get("cfg") == cfg:  # tier 3 just ran this 2-rank job: reuse it
        sps[2] = [r * cfg["batch_size"] * 2 for r in last_trainer_rates["rates"]]
        # and, in smoke mode, its 1-rank run (watchdog off: the smoke checks that this code runs)
        sps[1] = [r * cfg["batch_size"] for r in last_trainer_rates["unwatched_1rank"]]
        smoke_note = " Smoke: both sides are tier 3's runs, the 1-rank one with the watchdog off."
    else:
        samples = interleave(reps, {"2 ranks": lambda: measure(2), "1 rank": lambda: measure(1)})
        sps[2], sps[1] = samples["2 ranks"], samples["1 rank"]
    fig = compare("Trainer samples/s, 2 ranks vs 1", Stat("2 ranks", "samples/s", sps[2]),
                  Stat("1 rank", "samples/s", sps[1]), "2 ranks / 1 rank")
    fig.note = (f"{reps} repetitions each; tier 3's model and per-rank batch; scaling efficiency "
                f"(ratio / 2) = {fig.ratio / 2:.2f}. This machine has {_cores()} cores, so 2 ranks use all of them "
                "and their gradient all-reduce competes with compute for the same cores." + smoke_note)
    result.figures.append(fig)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))
