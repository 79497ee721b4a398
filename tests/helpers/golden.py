"""Golden-file assertions shared by the golden tests (test_*_golden.py, next to the code each one
pins): compare text to tests/golden_data/NAME.

A mismatch fails with a unified diff; regenerate every golden file with
`HPCGPU_REGEN_GOLDEN=1 pytest -k golden` and review the change in `git diff tests/golden_data`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "golden_data"
REGEN_HINT = "HPCGPU_REGEN_GOLDEN=1 pytest -k golden"


def assert_golden(name: str, text: str) -> None:
    """Fail with a unified diff unless `text` equals the golden file `name` (or rewrite it when regenerating)."""
    path = DATA / name
    if os.environ.get("HPCGPU_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"golden file {path} does not exist; create it with: {REGEN_HINT}", pytrace=False)
    expected = path.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{name} (golden)",
                tofile=f"{name} (now)",
            )
        )
        pytest.fail(f"{name} differs from its golden file:\n{diff}\nif the change is intended, regenerate: {REGEN_HINT}", pytrace=False)
