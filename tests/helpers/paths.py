"""Paths the tests need, independent of how deep a test module sits in tests/."""

from pathlib import Path

#: the repository root (docs/, slurm/, containers/, hpcgpu/)
REPO = Path(__file__).resolve().parents[2]
#: tests/helpers: task modules that runs import or that tests copy into a code directory
HELPERS = REPO / "tests" / "helpers"
#: the demo task that records where each rank ran; container tests copy it into the mounted code dir
WHERE_TASK = HELPERS / "where_task.py"
