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


def pytest_collection_modifyitems(config, items):
    """How `make test` shares the tiers between pytest-xdist workers (`-n 3 --dist loadgroup`).

    The Slurm tests are one group, run first and in order on one worker: they share the two-node
    cluster, and most of their time is spent waiting on the scheduler, while the other workers fill
    the two cores with everything else (a test that submits jobs without the marker joins by marking itself
    xdist_group("slurm")). Every other test module is a group of its own, so a module-scoped
    fixture (a baseline run, a paused run) starts once. Without xdist the marks change nothing.
    """
    import pytest

    def group(item) -> str:
        if item.get_closest_marker("slurm"):
            return "slurm"
        marked = item.get_closest_marker("xdist_group")
        return marked.args[0] if marked else item.nodeid.split("::")[0]

    groups = {item.nodeid: group(item) for item in items}
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    items.sort(key=lambda item: groups[item.nodeid] != "slurm")  # stable: the order within stays
