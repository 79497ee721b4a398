"""The docker fixture waits while containers/docker-engine.sh holds its lock (`make test` sets the
engine up in the background), and says so when it never lets go."""

from __future__ import annotations

import subprocess
import time

from tests.helpers import container_image


def test_waits_for_the_lock_and_returns_once_it_is_released(tmp_path, monkeypatch):
    monkeypatch.setattr(container_image, "DOCKER_DIR", tmp_path)
    (tmp_path / ".lock").touch()
    # the script's own way of holding it: flock on the file, here for 2 s
    holder = subprocess.Popen(["flock", str(tmp_path / ".lock"), "sleep", "2"])
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["flock", "-n", str(tmp_path / ".lock"), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "flock never took the lock"
            time.sleep(0.05)
        assert container_image.wait_for_docker_up(timeout=60) is None
        # it returned with the lock free: the holder had let go (a wait that returned at once would
        # find it still held for the rest of the 2 s)
        assert subprocess.run(["flock", "-n", str(tmp_path / ".lock"), "true"]).returncode == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_held_past_the_timeout_is_a_problem_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(container_image, "DOCKER_DIR", tmp_path)
    (tmp_path / ".lock").touch()
    holder = subprocess.Popen(["flock", str(tmp_path / ".lock"), "sleep", "60"])
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["flock", "-n", str(tmp_path / ".lock"), "true"]).returncode == 0:
            assert time.monotonic() < deadline, "flock never took the lock"
            time.sleep(0.05)
        problem = container_image.wait_for_docker_up(timeout=1)
        assert problem and "still holds" in problem and str(tmp_path / ".lock") in problem
    finally:
        holder.kill()
        holder.wait()


def test_no_lock_file_means_nothing_to_wait_for(tmp_path, monkeypatch):
    monkeypatch.setattr(container_image, "DOCKER_DIR", tmp_path)
    assert container_image.wait_for_docker_up(timeout=1) is None
