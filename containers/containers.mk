# Container targets; included by the top Makefile (which defines venv and PY).
#   make image        CUDA image for users: docker build on $(CUDA_BASE_IMAGE), torch from the base
#   make image-test   CPU test image localhost/hpcgpu:test with podman (Debian base, torch CPU wheel);
#                     from scratch ~2 min on 2 cores, ~5 s after a code change
#   make sif          Apptainer SIF from the docker image (containers/hpcgpu.def)

DOCKER            ?= docker
APPTAINER         ?= apptainer
IMAGE             ?= hpcgpu:latest
# pytorch/pytorch runtime images carry conda Python 3.11, the wheelhouse's default target; for an
# NGC base (Python 3.12) also set CUDA_WHEEL_PYTHON=3.12.
CUDA_BASE_IMAGE   ?= pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
CUDA_WHEEL_PYTHON ?= 3.11
TEST_IMAGE        ?= localhost/hpcgpu:test
SIF               ?= build/hpcgpu.sif

# podman flags these machines need after `podman run` (runc, cgroupfs, ulimits within the hard
# limits; see containers/podman-args.sh). hpcgpu reads HPCGPU_PODMAN_ARGS when it builds podman
# command lines, and the container tests use it. Set it (even empty) to override.
ifeq ($(origin HPCGPU_PODMAN_ARGS),undefined)
HPCGPU_PODMAN_ARGS := $(shell containers/podman-args.sh 2>/dev/null)
endif
export HPCGPU_PODMAN_ARGS

.PHONY: image image-base image-test sif

# Its own wheelhouse without torch: the build context stays small (no 200 MB CPU torch wheel).
image: venv
	HPCGPU_TORCH=none HPCGPU_WHEEL_PYTHON=$(CUDA_WHEEL_PYTHON) HPCGPU_WHEELHOUSE=build/wheelhouse-cuda \
	  PYTHON=$(PY) containers/build-wheelhouse.sh
	DOCKER_BUILDKIT=1 $(DOCKER) build -f containers/Dockerfile --build-arg BASE_IMAGE=$(CUDA_BASE_IMAGE) \
	  -t $(IMAGE) build/wheelhouse-cuda

# The Debian base needs no venv, so `make test` builds it while the venv installs (make -j).
image-base:
	containers/build-base.sh

image-test: venv image-base
	PYTHON=$(PY) HPCGPU_TEST_IMAGE=$(TEST_IMAGE) containers/build-image.sh

sif: image
	$(APPTAINER) build --force --build-arg FROM=$(IMAGE) $(SIF) containers/hpcgpu.def

# The Docker engine of the container tier (containers/docker-engine.sh): installs docker.io when
# missing, starts dockerd, loads the test image from podman when docker's copy differs.
#   make docker-up      all of that, then returns (from scratch ~70 s: apt ~31 s, image load ~38 s)
#   make docker-status  engine answering, and docker's test image the same as podman's?
#   make docker-down    stops the dockerd docker-up started (never an engine it did not start)
# `make test` uses docker-up-background: the same in the background while the tests run; the
# docker tests wait for it (the script's lock), so its minute overlaps the other tiers.
DOCKER_ENGINE := HPCGPU_TEST_IMAGE=$(TEST_IMAGE) containers/docker-engine.sh

.PHONY: docker-up docker-up-background docker-down docker-status

docker-up: image-test
	$(DOCKER_ENGINE) up

docker-up-background: image-test
	$(DOCKER_ENGINE) up --background

docker-down:
	$(DOCKER_ENGINE) down

docker-status:
	$(DOCKER_ENGINE) status
