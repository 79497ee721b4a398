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
    "tests.helpers.netns",  # netns_pair: two network namespaces joined by a veth pair (root)
    "tests.helpers.xdist_groups",  # how `make test` shares the tests between its xdist workers
]


def pytest_configure(config):
    """Under `make mutate` (mutmut), keep the coverage pass in pytest's own process.

    mutmut's first pass ("stats") records which test reaches which function; only pytest's process
    can record, and a rank or CLI subprocess that inherited MUTANT_UNDER_TEST=stats would try and
    fail. So for that pass the marker moves to mutmut's process-local copy. The later passes (one
    mutant each) keep the variable, so real subprocesses run the mutant too and can kill it.
    """
    import os

    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        from mutmut.mutation import trampoline

        trampoline._mutant_under_test = os.environ.pop("MUTANT_UNDER_TEST")
