# The local three-node Slurm cluster (slurm/cluster.sh); included by the top-level Makefile.
# Clients find it through /etc/slurm/slurm.conf, so no SLURM_CONF is exported here or anywhere.
# HPCGPU_SLURM_DIR (scratch dir, default /tmp/hpcgpu-slurm) passes through the environment.

SLURM_CLUSTER := bash slurm/cluster.sh
# PY comes from the top-level Makefile; the default lets this file work on its own too.
PY ?= .venv/bin/python

.PHONY: slurm-up slurm-down slurm-status test-slurm

## slurm-up: start (or check) the local cluster: munged, slurmctld, slurmd node1, node2, node3
##   make slurm-up HPCGPU_SLURM_NODES=8: node1-node8, the extra ones in partition scale only (benchmark
##   tier 11); changing the count restarts the cluster and cancels its jobs. Plain `make slurm-up`
##   goes back to three.
slurm-up:
	$(SLURM_CLUSTER) up

## slurm-down: stop every daemon of the local cluster (running jobs are cancelled first)
slurm-down:
	$(SLURM_CLUSTER) down

## slurm-status: print sinfo; fails when node1-node3 are not usable
slurm-status:
	$(SLURM_CLUSTER) status

## test-slurm: the tests that need the cluster, failing (not skipping) when it is not up
test-slurm: slurm-up
	HPCGPU_REQUIRE_SLURM=1 $(PY) -m pytest -q -m slurm $(PYTEST_ARGS)
