"""The one check for values that must stay on one line (sbatch lines, argv words, names)."""

from __future__ import annotations

import re
from typing import Any

#: control characters (newline, carriage return, NUL, ...) can end an #SBATCH line or a shell word
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(value: Any) -> bool:
    """True for a string holding a newline or another control character."""
    return isinstance(value, str) and bool(_CONTROL.search(value))
