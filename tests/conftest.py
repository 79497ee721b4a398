"""Fixtures and hooks for the whole test tree.

Tests sit next to the code they test (tests/host/ for hpcgpu/host/, ...); what they need from the
machine is a marker, not a directory: `slurm` (the local cluster), `container` (podman and the test
image), `gpu` (a CUDA device), `slow` (real processes, more than a few seconds). The fixtures behind
those markers live in tests/helpers and are registered here, so a test can sit anywhere.
"""

pytest_plugins = [
    "tests.helpers.slurm_cluster",  # slurm_cluster, slurm, cancel_jobs
    "tests.helpers.container_image",  # test_image, machine_args, podman_run
    "tests.helpers.gpu_tier",  # skips gpu-marked tests where torch sees no CUDA device
]
