"""The CLI never imports torch at start-up: `hpcgpu --help` and every verb's --help stay cheap."""

import subprocess
import sys

import pytest

from hpcgpu.cli import COMMANDS

PROBE = """
import sys
from hpcgpu.cli import main
try:
    main({argv!r})
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "numpy", "submitit", "tensorboard") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""

HELP_ARGVS = [["--help"]] + [[verb, "--help"] for verb in COMMANDS] + [
    ["run", "local", "--help"], ["spec", "validate", "--help"], ["spec", "show", "--help"], ["spec", "schema", "--help"],
]


@pytest.mark.parametrize("argv", HELP_ARGVS, ids=lambda a: " ".join(a))
def test_help_does_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    assert "HEAVY=\n" in out.stdout, f"heavy modules imported by {' '.join(argv)}: {out.stdout.splitlines()[-1]}"


def test_dry_run_does_not_import_torch(tmp_path):
    argv = ["run", "local", "--dry-run"]
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stdout and "rank  node  local  device" in out.stdout
