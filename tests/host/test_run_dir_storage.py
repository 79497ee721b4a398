"""Where runs go cannot be written: a dangling link or a file as logging.dir, a full, read-only or
size-limited filesystem. Each is exit 2 naming logging.dir (or the file) and the cause, and leaves
nothing: no run directory, no base directory it created, no index entry. The conditions are real
(a tiny tmpfs when this user may mount, the kernel's file-size limit otherwise), not mocks."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.relkit import REPO, base_env

ARGS = ["run", "local", "--nproc", "1"]


def run(cwd: Path, env_extra: dict | None = None, preexec=None) -> subprocess.CompletedProcess:
    env = base_env(cwd / "home", {"PYTHONDONTWRITEBYTECODE": "1", **(env_extra or {})})
    out = subprocess.run([sys.executable, "-m", "hpcgpu", *ARGS], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120, preexec_fn=preexec)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_a_dangling_symlink_as_logging_dir_is_named_with_its_target(tmp_path):
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    out = run(tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"logging.dir 'runs' ({tmp_path}/runs) is a symbolic link to '{tmp_path}/gone', which does not exist" \
        in out.stderr, out.stderr
    assert "free run directory" not in out.stderr
    assert files_under(tmp_path) == ["runs"] and (tmp_path / "runs").is_symlink()


def test_a_file_as_logging_dir_is_named(tmp_path):
    (tmp_path / "out").write_text("not a directory\n")
    out = run(tmp_path, {"HPCGPU_LOG_DIR": "out"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"logging.dir 'out' ({tmp_path}/out) is a file, not a directory" in out.stderr, out.stderr
    assert files_under(tmp_path) == ["out"]


def test_a_file_in_the_way_of_logging_dir_names_it(tmp_path):
    (tmp_path / "base").write_text("")
    out = run(tmp_path, {"HPCGPU_LOG_DIR": "base/runs"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"logging.dir 'base/runs'): {tmp_path}/base: exists and is not a directory" in out.stderr, out.stderr
    assert files_under(tmp_path) == ["base"]


def _file_size_limit() -> None:
    # the kernel refuses writes past 1 KiB (EFBIG); plan.json is larger. SIGXFSZ would kill instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def test_a_write_refused_by_the_kernel_names_the_file_and_leaves_nothing(tmp_path):
    out = run(tmp_path, {"HPCGPU_LOG_DIR": "deep/runs"}, preexec=_file_size_limit)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"cannot write the run (logging.dir 'deep/runs'): {tmp_path}/deep/runs/" in out.stderr, out.stderr
    assert "/plan.json: File too large" in out.stderr and "ulimit -f" in out.stderr
    assert files_under(tmp_path) == []  # not the run dir, nor deep/ and deep/runs it created, nor the index


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs at path, or skip where this user may not mount (the non-root fast tier)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "hpcgpu-test", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(disk: Path) -> None:
    """Write until the filesystem says ENOSPC."""
    with open(disk / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"x" * 4096)


def test_a_full_disk_at_start_is_exit_2_naming_the_file(tmp_path):
    with tmpfs(tmp_path / "disk", "size=64k,mode=0755") as disk:
        (disk / "runs").mkdir()
        fill(disk)
        out = run(tmp_path, {"HPCGPU_LOG_DIR": "disk/runs"})
        left = files_under(disk)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"cannot write the run (logging.dir 'disk/runs'): {tmp_path}/disk/runs" in out.stderr, out.stderr
    assert "No space left on device" in out.stderr and "free space" in out.stderr
    assert left == ["filler", "runs"]  # the base was there before: kept; no run dir in it
    assert not (tmp_path / "home" / "runs.jsonl").exists()


def test_a_read_only_filesystem_is_exit_2_naming_logging_dir(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k"):
        out = run(tmp_path, {"HPCGPU_LOG_DIR": "ro/runs"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"cannot write the run (logging.dir 'ro/runs'): {tmp_path}/ro/runs: Read-only file system" in out.stderr
    assert "read-only" in out.stderr
    assert files_under(tmp_path) == ["ro"]
