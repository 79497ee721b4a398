"""tests/helpers/xdist_groups.py: under `-n N --dist loadgroup` (make test) a group really runs on one
worker, and the groups start in the plugin's order. With pytest 9.2 and xdist 3.8 the groups were
silently ignored: every test was a group of its own, so the Slurm tests ran side by side on every
worker and a module-scoped fixture started once per worker that ran one of its tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

RECORD = """
import os, pytest

def record(request):
    with open(os.environ["GROUPS_OUT"], "a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {request.node.nodeid}\\n")
"""


def sample(tmp_path: Path) -> Path:
    """Slurm tests in three modules (one joins the Slurm group by its own mark, one is a Slurm group of its
    own), a heavy and a light module."""
    (tmp_path / "record.py").write_text(RECORD)
    (tmp_path / "pytest.ini").write_text(textwrap.dedent("""\
        [pytest]
        markers =
            slurm: x
            slow: x
            container: x
        """))
    (tmp_path / "test_a_light.py").write_text(textwrap.dedent("""\
        import pytest
        from record import record

        @pytest.mark.parametrize("i", range(6))
        def test_light(i, request):
            record(request)
        """))
    (tmp_path / "test_b_slurm.py").write_text(textwrap.dedent("""\
        import pytest
        from record import record

        @pytest.mark.slurm
        @pytest.mark.parametrize("i", range(4))
        def test_s(i, request):
            record(request)

        def test_not_slurm(request):
            record(request)
        """))
    (tmp_path / "test_c_joins.py").write_text(textwrap.dedent("""\
        import pytest
        from record import record

        pytestmark = pytest.mark.xdist_group("slurm")

        def test_joins(request):
            record(request)
        """))
    (tmp_path / "test_e_lane.py").write_text(textwrap.dedent("""\
        import pytest
        from record import record

        pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm-e")]

        def test_lane(request):
            record(request)
        """))
    (tmp_path / "test_d_heavy.py").write_text(textwrap.dedent("""\
        import pytest
        from record import record

        @pytest.mark.slow
        @pytest.mark.parametrize("i", range(2))
        def test_heavy(i, request):
            record(request)
        """))
    return tmp_path


def run_sample(tmp_path: Path, *args: str) -> list[tuple[str, str]]:
    directory = sample(tmp_path)
    out = tmp_path / "groups.txt"
    env = {**os.environ, "GROUPS_OUT": str(out), "PYTHONPATH": f"{REPO}{os.pathsep}{directory}"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.helpers.xdist_groups",
                        "-c", str(directory / "pytest.ini"), "--rootdir", str(directory), *args, str(directory)],
                       cwd=directory, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return [tuple(line.split(" ", 1)) for line in out.read_text().splitlines()]


def test_each_group_runs_on_one_worker_under_loadgroup(tmp_path):
    ran = run_sample(tmp_path, "-n", "3", "--dist", "loadgroup")
    assert len(ran) == 15
    workers: dict[str, set] = {}
    for worker, nodeid in ran:
        group = nodeid.rsplit("@", 1)[1]  # the suffix xdist's scheduler groups by
        workers.setdefault(group, set()).add(worker)
    assert set(workers) == {"slurm", "slurm-e", "test_a_light.py", "test_b_slurm.py", "test_d_heavy.py"}, ran
    assert all(len(w) == 1 for w in workers.values()), workers
    slurm = [nodeid.split("@")[0] for _, nodeid in ran if nodeid.endswith("@slurm")]
    assert slurm == [f"test_b_slurm.py::test_s[{i}]" for i in range(4)] + ["test_c_joins.py::test_joins"]


def test_the_slurm_group_comes_first_then_the_heavy_modules(tmp_path):
    ran = run_sample(tmp_path, "-p", "no:xdist")
    modules = [nodeid.split("::")[0] for _, nodeid in ran]
    assert "@" not in "".join(nodeid for _, nodeid in ran)  # without xdist the node ids stay as they are
    # the Slurm groups (b's Slurm tests, then c; e), d (2 slow tests), a (6 light tests), b's other test (1)
    assert modules == (["test_b_slurm.py"] * 4 + ["test_c_joins.py"]
                       + ["test_e_lane.py"] + ["test_d_heavy.py"] * 2
                       + ["test_a_light.py"] * 6 + ["test_b_slurm.py"]), modules


def test_a_test_with_the_cluster_to_itself_waits_for_the_slurm_tests_running_and_they_for_it(tmp_path, monkeypatch):
    import fcntl

    from tests.helpers import slurm_cluster

    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", f"t{os.getpid()}")
    monkeypatch.setattr(slurm_cluster.tempfile, "gettempdir", lambda: str(tmp_path))

    def free(kind: int) -> bool:
        with open(slurm_cluster._cluster_lock_path(), "a") as f:
            try:
                fcntl.flock(f, kind | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

    with slurm_cluster._cluster_lock(fcntl.LOCK_SH):  # a Slurm test running
        assert free(fcntl.LOCK_SH) and not free(fcntl.LOCK_EX)
    with slurm_cluster._cluster_lock(fcntl.LOCK_EX):  # the cluster to itself
        assert not free(fcntl.LOCK_SH)
    assert free(fcntl.LOCK_EX)


def test_a_test_waiting_for_the_cluster_to_itself_goes_before_slurm_tests_that_come_later(tmp_path, monkeypatch):
    # Two Slurm chains taking turns with the shared lock must not starve a test that waits for the
    # cluster to itself (flock alone lets new shared holders pass a pending exclusive one).
    import fcntl
    import threading
    import time

    from tests.helpers import slurm_cluster

    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", f"t{os.getpid()}")
    monkeypatch.setattr(slurm_cluster.tempfile, "gettempdir", lambda: str(tmp_path))
    order: list[str] = []
    exclusive_waiting = threading.Event()

    def to_itself():
        exclusive_waiting.set()
        with slurm_cluster._cluster_lock(fcntl.LOCK_EX):
            order.append("to itself")

    def later_shared():
        with slurm_cluster._cluster_lock(fcntl.LOCK_SH):
            order.append("later shared")

    with slurm_cluster._cluster_lock(fcntl.LOCK_SH):  # a Slurm test running
        exclusive = threading.Thread(target=to_itself)
        exclusive.start()
        exclusive_waiting.wait()
        turnstile = slurm_cluster._cluster_lock_path().with_suffix(".turnstile")
        for _ in range(600):  # until the exclusive taker holds the turnstile (it waits behind the running test)
            with open(turnstile, "a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                except BlockingIOError:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the test waiting for the cluster to itself never held the turnstile")
        shared = threading.Thread(target=later_shared)
        shared.start()
        shared.join(0.5)
        assert shared.is_alive() and order == []  # the later Slurm test waits: the running one holds the cluster
    exclusive.join(60)
    shared.join(60)
    assert order == ["to itself", "later shared"]
