# hpcgpu: `make run` trains the bundled demo, `make test` runs every test tier this machine can run.
# Both install what they need into .venv first (the CPU build of torch where there is no GPU).

VENV         ?= .venv
PY           := $(VENV)/bin/python
HPCGPU       := $(VENV)/bin/hpcgpu
TORCH_VERSION ?= 2.13.0
TORCH_INDEX  ?=
# Each integration tier (Slurm, containers) is started by the Makefile and required by the tests in CI.
PYTEST_ARGS  ?=

.PHONY: venv mlflow-server run test test-setup test-unit test-fast test-gpu gpu-check-prepare gpu-check bench bench-smoke clean docs-check mutate

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	@# Pin torch first: with torch==2.13.0 installed, `pip install -e .` adds no CUDA wheels. Which
	@# build comes is the configured index's choice: TORCH_INDEX=https://download.pytorch.org/whl/cpu
	@# asks for the CPU build explicitly, .../whl/cu128 for a CUDA one (docs/install.md). Without a
	@# driver, CUDA wheels are refused below.
	@# --no-compile: pip would byte-compile every module of torch, wandb, matplotlib..., most never
	@# imported; the modules a run imports are compiled once below instead, the rest on first import
	@# (make venv 101 -> 69 CPU-s on 2 cores, docs/development.md).
	$(PY) -m pip install --quiet --no-compile "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@# the tracker extras: their tests run for real (about 15 s and 200 MB more); bench: matplotlib
	@# for make bench's scaling plot (about 8 s and 80 MB more)
	$(PY) -m pip install --quiet --no-compile -e ".[test,mlflow,wandb,bench]"
	PYTHONDONTWRITEBYTECODE= $(PY) -c "import torch.distributed.run, torch._dynamo, torch.utils.tensorboard, pydantic, click, submitit"
	@if ! command -v nvidia-smi >/dev/null 2>&1 && $(PY) -m pip list 2>/dev/null | grep -Eq '^nvidia-(cu|nccl|cudnn)'; then \
	  echo "error: CUDA wheels were installed on a machine without a GPU; remove $(VENV) and check pip's index" >&2; exit 1; fi
	touch $@

# A real MLflow tracking server for tests/system/test_mlflow_server.py: the full `mlflow` package
# (pandas, Flask, ...; about a minute and 600 MB), in a venv of its own so .venv stays small.
MLFLOW_SERVER_VENV ?= .venv-mlflow-server
mlflow-server: $(MLFLOW_SERVER_VENV)/.installed

$(MLFLOW_SERVER_VENV)/.installed:
	python3 -m venv $(MLFLOW_SERVER_VENV)
	@# --no-compile: the server imports a small part of mlflow, pandas, Flask... (compiling all costs ~30 CPU-s)
	$(MLFLOW_SERVER_VENV)/bin/pip install --quiet --no-compile "mlflow>=3"
	PYTHONDONTWRITEBYTECODE= $(MLFLOW_SERVER_VENV)/bin/python -c "import mlflow.cli, mlflow.server"
	touch $@

run: venv
	$(HPCGPU) run local

# Test tiers are markers (pyproject.toml), not directories; tests sit next to the code they test.
test-unit: venv
	$(PY) -m pytest -q -m "not slow and not slurm and not container and not gpu" $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -m "not slurm and not container and not gpu" $(PYTEST_ARGS)

# Four pytest-xdist workers on two cores: the Slurm tests in two groups, each in order on one worker
# (mostly waiting on the scheduler), the rest on the other two, one test module at a time, the
# heaviest first (tests/helpers/xdist_groups.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 4
# PYTHONDONTWRITEBYTECODE= : where the environment sets it (some CI images do), every rank, agent
# and CLI process of the tests would compile hpcgpu's modules again and each worker would re-rewrite
# every test module (about 5 s of collection per worker); the caches stay in __pycache__ (ignored).
test:
	$(MAKE) --no-print-directory -j4 --output-sync=target test-setup
	PYTHONDONTWRITEBYTECODE= HPCGPU_REQUIRE_SLURM=1 HPCGPU_REQUIRE_MLFLOW_SERVER=1 HPCGPU_REQUIRE_CONTAINER=1 HPCGPU_REQUIRE_DOCKER=1 HPCGPU_REQUIRE_NETNS=1 $(PY) -m pytest -q -m "not gpu" --durations=15 \
	  $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) $(PYTEST_ARGS)

# What the tiers need, set up side by side: the venv installs while apt installs Slurm, podman and
# debootstrap (scripts/apt-install.sh takes turns at apt's lock) and the base image is made.
test-setup: venv mlflow-server slurm-up image-test docker-up-background

clean:
	rm -rf build dist *.egg-info .pytest_cache runs mutants

-include slurm/cluster.mk
-include containers/containers.mk
-include benchmarks/bench.mk

docs: venv
	$(PY) -c "from hpcgpu.host.specdoc import reference_markdown; open('docs/spec.md','w').write(reference_markdown())"

# A skip is a failure here: this target is for machines with a GPU (tests/helpers/gpu_tier.py).
test-gpu: venv
	HPCGPU_REQUIRE_GPU=1 $(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

# The GPU check (docs/development.md). Prepare here, where a package index is reachable: a wheel of
# this tree and the pure dependencies the GPU machine's Python ($(GPU_PYVER), torch preinstalled) lacks.
GPU_PYVER ?= 3.12
WHEELHOUSE := build/wheelhouse
gpu-check-prepare: venv
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	$(PY) -m pip download --quiet -d $(WHEELHOUSE) --only-binary=:all: --python-version $(GPU_PYVER) \
	  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
	  "pydantic>=2.5" "submitit>=1.5" "pytest>=7"
	@du -sh $(WHEELHOUSE)

# Run on the GPU machine (carry build/wheelhouse): OUT is where the summary, doctor.json and tier 9 go.
OUT ?= build/gpucheck
gpu-check:
	bash scripts/gpu_check.sh $(OUT)

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml; docs/development.md): each
# mutant against the fast tier's tests that reach it. Not part of `make test`. MUTANTS='hpcgpu.host.*'
# limits a run; results accumulate in mutants/ (a rerun retests only what changed).
MUTANTS ?=
mutate: venv
	$(PY) -m pip install --quiet -e ".[mutate]"
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(PY) scripts/mutation_report.py --min-score 90
