"""How `make test` shares the tests between pytest-xdist workers (`-n 3 --dist loadgroup`): a pytest
plugin, registered for the whole tree by tests/conftest.py.

The Slurm tests are two groups, run first, each in order on one worker: they share the two-node
cluster, and most of their time is spent waiting on the scheduler, while the other workers fill
the two cores with everything else. `slurm` holds the tests marked so (a test that submits jobs
without the marker joins by marking itself xdist_group("slurm")); a module marked
xdist_group("slurm-...") is a Slurm group of its own (tests/backends/slurm/test_submit.py, the
longest). A test that needs the cluster to itself says so (slurm_cluster_to_itself,
tests/helpers/slurm_cluster.py). Every other test module is a group of its own, so a module-scoped
fixture (a baseline run, a paused run) starts once. The groups start heaviest first (after the Slurm
group: the ones with the most tests that start real processes), so no long module is left to start
when the other workers have run out of work. Without xdist the marks change nothing.

xdist passes a test's group from the worker to the scheduler as a suffix of its node id
(`path::test@group`), which it sets by writing `item._nodeid`: on pytest >= 9.2 (structured node
ids) that write no longer changes the node id, and every test became a group of its own, silently
(pytest-dev/pytest-xdist#1386). And it reads the marks before this plugin's hook could add them. So
the suffix is set here, after xdist's hook, through whichever attribute holds the id.
"""

from __future__ import annotations

import pytest

#: marks of tests that start real processes (seconds each); a group with more of them starts earlier
HEAVY = ("slow", "slurm", "container")


def group_of(item) -> str:
    """The xdist group of a test: its own xdist_group mark, "slurm" for a Slurm test, or its module."""
    marked = item.get_closest_marker("xdist_group")
    if marked:
        return marked.args[0]
    if item.get_closest_marker("slurm"):
        return "slurm"
    return item.nodeid.split("::")[0].split("@")[0]


def is_slurm_group(group: str) -> bool:
    return group == "slurm" or group.startswith("slurm-")


def has_group_suffix(nodeid: str) -> bool:
    """Whether the node id already ends in `@group` (xdist's own test: an @ after the last ])."""
    return nodeid.rfind("@") > nodeid.rfind("]")


def set_nodeid(item, nodeid: str) -> None:
    """Give the item another node id: pytest >= 9.2 keeps a structured `_id`, older ones `_nodeid`."""
    if hasattr(item, "_id"):
        item._id = type(item._id).parse(nodeid)
    else:
        item._nodeid = nodeid


def pytest_configure(config):
    # Keep the order of the groups this plugin sorts (xdist's default re-sorts them by number of tests,
    # which starts the few-test, long modules last).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    groups = {id(item): group_of(item) for item in items}
    heavy: dict[str, int] = {}
    size: dict[str, int] = {}
    for item in items:
        g = groups[id(item)]
        size[g] = size.get(g, 0) + 1
        heavy[g] = heavy.get(g, 0) + any(item.get_closest_marker(m) for m in HEAVY)
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(g))
    # stable: the order within a group stays
    items.sort(key=lambda item: (not is_slurm_group(groups[id(item)]), -heavy[groups[id(item)]], -size[groups[id(item)]]))
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        for item in items:
            if not has_group_suffix(item.nodeid):
                set_nodeid(item, f"{item.nodeid}@{groups[id(item)]}")
