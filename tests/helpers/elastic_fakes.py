"""A stand-in for torch elastic's ProcessFailure, for tests of hpcgpu.agent.failure."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any


@dataclass
class Failure:
    """What torch elastic's ProcessFailure offers describe_failure."""

    exitcode: int
    local_rank: int
    pid: int
    message: Any = ""

    def signal_name(self) -> str:
        return signal.Signals(-self.exitcode).name if self.exitcode < 0 else "<N/A>"
