"""hpcgpu doctor: one small function per check, each returning a CheckResult; see docs/doctor.md.

Importing this package never imports torch: only the checks that need it do, when they run.
"""

from hpcgpu.doctor.probe import Probe
from hpcgpu.doctor.result import FAIL, OK, SKIP, WARN, CheckResult, Skip

__all__ = ["CheckResult", "Probe", "Skip", "OK", "WARN", "FAIL", "SKIP"]
