# The performance suite (benchmarks/); included by the top-level Makefile.
#   make bench        tiers 1-8 (9 needs a GPU), median of BENCH_REPS repetitions; writes
#                     benchmarks/results/<timestamp>.json and benchmarks/RESULTS.md (< 15 min on 2 cores)
#   make bench-smoke  tiny sizes, 1 repetition, results under BENCH_SMOKE_OUT: checks the suite works (< 60 s)
# Tier 8 needs the local Slurm cluster (make slurm-up); without it the tier is skipped with a note.

PY ?= .venv/bin/python
BENCH_REPS ?= 5
BENCH_ARGS ?=
BENCH_SMOKE_OUT ?= build/bench-smoke

bench: venv
	$(PY) -m benchmarks --reps $(BENCH_REPS) $(BENCH_ARGS)

bench-smoke: venv
	$(PY) -m benchmarks --smoke --out $(BENCH_SMOKE_OUT) $(BENCH_ARGS)
