"""Tier 10: resume cost vs ranks. For 1, 2 and 4 ranks on this machine: launch to the first step resumed
from one prepared checkpoint (256 MiB of tensors, saved by dist.save_checkpoint), against a fresh launch
of the same script; the difference (the resume overhead: the worker's verification of the manifest's
SHA-256, the memory-mapped load, the copy into the model) against one cold read of the checkpoint's
files (`cat > /dev/null`). hpcgpu verifies once per job and maps the file once per node, so the
overhead, in units of that read, must not grow with the ranks.

On 2 cores the start-up of 4 ranks (seconds) swamps the load, so the two launches of each rank count
are interleaved and only the difference of their medians is the overhead.

Smoke runs 2 ranks only: the multi-rank path (one verification per job, one mapping per node, shared
by the ranks); the 1-rank launches would run the same code again, and there is no growth ratio.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.harness import SCRIPTS, Bench, Figure, Stat, TierResult, hpcgpu_cmd, interleave, run as run_cmd
from benchmarks.pagecache import evict

TITLE = "Resume: launch to first step, resumed vs fresh, against one cold read of the checkpoint"
SCRIPT = SCRIPTS / "resume_step.py"
MIB = 1 << 20
#: the overhead may grow this much from 1 rank to the most ranks: one verification and one read per
#: node stay flat, but each rank still copies the mapped tensors into its own, and on 2 cores four
#: copies share two cores
GROWTH_TARGET = "<= 1.5"
#: evicted means at most this fraction of a file left in the page cache
EVICTED = 0.05


def overhead_name(nproc: int) -> str:
    """The per-rank-count figure's name (benchmarks/plot.py reads the rank count back from it)."""
    return f"resume overhead vs one cold read, {nproc} rank{'s' if nproc > 1 else ''}"


def _spec(path: Path, ckpt_dir: Path, out: Path, mib: int, *extra: str) -> Path:
    spec = {"name": path.stem, "entry": {"script": str(SCRIPT), "args": [str(out), str(mib), *extra]},
            "checkpoint": {"dir": str(ckpt_dir)}, "logging": {"tensorboard": False}}
    path.write_text(yaml.safe_dump(spec))
    return path


def _launch(b: Bench, cwd: Path, spec: Path, out: Path, nproc: int, resumed: bool, phases: list) -> float:
    """Seconds from starting `hpcgpu run local` to the end of the first step on the last rank."""
    out.mkdir(exist_ok=True)
    for old in out.glob("rank*.json"):
        old.unlink()
    t0 = time.time()
    run_cmd([*hpcgpu_cmd(), "run", "local", "--nproc", str(nproc), "-f", spec], b.env(), cwd, timeout=300)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    if any(r["resumed"] != resumed for r in ranks):  # a sample of the wrong kind would measure nothing
        raise RuntimeError(f"{spec.name}: expected resumed={resumed}, ranks report {[r['resumed'] for r in ranks]}")
    phases.append({"to_script": max(r["script_start"] for r in ranks) - t0,
                   "load": max(r["loaded"] - r["pg_up"] for r in ranks)})
    return max(r["first_step"] for r in ranks) - t0


def _cat(files: list[Path]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True, timeout=300)
    return time.perf_counter() - t0


def _median(phases: list, key: str) -> float:
    return statistics.median(p[key] for p in phases)


def run(b: Bench, result: TierResult) -> None:
    mib = 8 if b.smoke else 256
    counts = (2,) if b.smoke else (1, 2, 4)  # smoke: see the module docstring
    cwd = b.workdir("tier10")
    ckpt_dir, empty_dir, out = cwd / "ckpt", cwd / "no-ckpt", cwd / "out"
    empty_dir.mkdir()
    # the checkpoint, written by dist.save_checkpoint in one plain process (the API works without a
    # launcher; a launch would cost the smoke run seconds more); every resume below reads it
    out.mkdir()
    run_cmd([sys.executable, SCRIPT, out, mib, "save"], b.env(HPCGPU_CKPT_DIR=str(ckpt_dir)), cwd, timeout=300)
    files = sorted(p for p in ckpt_dir.glob("step_*/*") if p.is_file())
    if not files:
        raise RuntimeError(f"the save run left no checkpoint files in {ckpt_dir}")
    nbytes = sum(p.stat().st_size for p in files)
    # the same script and spec on both sides; the fresh side's checkpoint.dir is empty, so it goes
    # through the same resume lookup and finds nothing
    fresh_spec = _spec(cwd / "fresh.yaml", empty_dir, out, mib)
    resume_spec = _spec(cwd / "resume.yaml", ckpt_dir, out, mib)
    left: list[float] = []

    def cold(sample):
        """Every sample starts with the checkpoint out of the page cache (the fresh side too: the
        same work before each sample)."""
        def run_sample() -> float:
            left.append(evict(files))
            return sample()
        return run_sample

    if not b.smoke:  # unrecorded: page cache warm for Python and torch, first-run costs paid
        _launch(b, cwd, fresh_spec, out, 1, False, [])
        _launch(b, cwd, resume_spec, out, 1, True, [])
    launches, phases, cats = {}, {}, []
    for n in counts:
        phases[n] = {"fresh": [], "resumed": []}
        samples = interleave(b.reps, {
            "fresh": cold(lambda n=n: _launch(b, cwd, fresh_spec, out, n, False, phases[n]["fresh"])),
            "resumed": cold(lambda n=n: _launch(b, cwd, resume_spec, out, n, True, phases[n]["resumed"])),
            "cat": cold(lambda: _cat(files))})
        launches[n] = samples
        cats += samples["cat"]
    cat = Stat("cat > /dev/null, cold", "s", cats)
    cache = (f"the checkpoint's pages were evicted before every sample (posix_fadvise DONTNEED on its files: "
             f"at most {max(left) * 100:.0f}% left cached); the rest of the page cache (Python, torch) stays warm"
             if max(left) <= EVICTED else
             f"the file system ignored the eviction ({max(left) * 100:.0f}% of the checkpoint stayed cached): "
             f"reads came from memory, and the figures understate a cold resume")
    result.note = (f"Checkpoint: {len(files)} files, {nbytes / MIB:.1f} MiB ({mib} MiB of float32 tensors); "
                   f"{cache}. Root is not needed: eviction is per file, not tier 6's drop_caches.")
    overhead = {}
    spread = lambda xs: f"{min(xs):.2f}-{max(xs):.2f} s"  # noqa: E731
    for n in counts:
        fresh, resumed = _stat(launches, n, "fresh"), _stat(launches, n, "resumed")
        overhead[n] = resumed.median - fresh.median
        result.figures.append(Figure(
            overhead_name(n), resumed, fresh, overhead[n] / cat.median, "(resumed - fresh) / cat",
            note=f"overhead {overhead[n]:.3f} s against cat {cat.median:.3f} s (launch noise: fresh launches "
                 f"{spread(fresh.samples)}, resumed {spread(resumed.samples)}); median load phase (dist.init "
                 f"returned to the tensors copied in, slowest rank) {_median(phases[n]['resumed'], 'load'):.3f} s "
                 f"resumed vs {_median(phases[n]['fresh'], 'load'):.3f} s fresh; launch to the script's first "
                 f"line {_median(phases[n]['resumed'], 'to_script'):.2f} s resumed (after the worker's "
                 f"verification) vs {_median(phases[n]['fresh'], 'to_script'):.2f} s fresh."))
    result.figures.append(Figure("one cold read of the checkpoint", cat, None, None,
                                 note=f"{nbytes / MIB:.1f} MiB; {nbytes / cat.median / 1e9:.3g} GB/s"))
    top = counts[-1]
    if 1 not in overhead:  # smoke: one rank count, nothing to grow from
        result.note += f" Smoke: {top} ranks only, so no growth ratio."
    elif overhead[1] > 0:
        result.figures.append(Figure(
            f"resume overhead growth, {top} ranks / 1 rank", _stat(launches, top, "resumed"), _stat(launches, 1, "resumed"),
            overhead[top] / overhead[1], f"overhead {top} ranks / overhead 1 rank", GROWTH_TARGET,
            note="The ratio of the two overheads (resumed - fresh medians): the same checkpoint and the same cat "
                 "reference, so this is the growth of overhead / cat. The sides shown are the resumed launches."))
    else:
        result.note += (f" The overhead at 1 rank ({overhead[1]:.3f} s) did not rise above the launch noise: "
                        "no growth ratio.")


def _stat(launches: dict, n: int, side: str) -> Stat:
    return Stat(f"{side} launch, {n} rank{'s' if n > 1 else ''}", "s", launches[n][side])
