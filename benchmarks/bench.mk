# The performance suite (benchmarks/); included by the top-level Makefile.
#   make bench        tiers 1-11 (9 needs a GPU), median of BENCH_REPS repetitions; writes
#                     benchmarks/results/<timestamp>.json, benchmarks/RESULTS.md and, with matplotlib,
#                     benchmarks/scaling.png (tiers 1-8 took 4.4 min on 2 cores; tiers 10 and 11 took
#                     2.6-3.3 min each at BENCH_REPS=3, so about 14 min in all at 5 is an estimate)
#   make bench-smoke  tiny sizes, 1 repetition, results under BENCH_SMOKE_OUT: checks the suite works (< 60 s)
# Tiers 8 and 11 need the local Slurm cluster (make slurm-up); without it they are skipped with a note.

PY ?= .venv/bin/python
BENCH_REPS ?= 5
BENCH_ARGS ?=
BENCH_SMOKE_OUT ?= build/bench-smoke

bench: venv
	$(PY) -m benchmarks --reps $(BENCH_REPS) $(BENCH_ARGS)

bench-smoke: venv
	$(PY) -m benchmarks --smoke --out $(BENCH_SMOKE_OUT) $(BENCH_ARGS)
