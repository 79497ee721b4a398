"""Spec values that end up on an #SBATCH line or in a path (logging.dir, slurm.partition, account,
qos, constraint, and the values of slurm.extra) must be one line: a newline would end the #SBATCH
line and the rest would run as a shell command. Refused when the spec loads, naming the key."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host.spec import parse_spec


@pytest.mark.parametrize("text, key", [
    ('logging:\n  dir: "runs\\ntouch /tmp/x"\n', "logging.dir"),
    ('slurm:\n  partition: "gpu\\n#SBATCH --wrap=id"\n', "slurm.partition"),
    ('slurm:\n  account: "a\\rb"\n', "slurm.account"),
    ('slurm:\n  qos: "q\\tx"\n', "slurm.qos"),
    ('slurm:\n  constraint: "h100\\nid"\n', "slurm.constraint"),
    ('slurm:\n  extra:\n    reservation: "big\\nid"\n', "slurm.extra"),
])
def test_a_value_with_a_newline_or_control_character_is_refused_naming_the_key(text, key):
    with pytest.raises(UserError) as info:
        parse_spec(text, "job.yaml")
    line = next(ln for ln in str(info.value).splitlines() if ln.startswith(f"  {key} (line 2): "))
    assert line.endswith("contains a newline or another control character; give a single-line value"), line


def test_single_line_values_load():
    spec = parse_spec("logging: {dir: runs/a b}\nslurm: {partition: gpu, extra: {reservation: big, nice: 5}}\n")
    assert spec.logging.dir == "runs/a b" and spec.slurm.extra == {"reservation": "big", "nice": 5}
