"""The bound on a spec's size in values (docs/security.md: "a spec with more than 20,000 values" is
refused): exactly the bound loads, one more does not. Every YAML node counts: the document's
mapping, each key, each value and each list item."""

from __future__ import annotations

import pytest

from hpcgpu.contract.errors import UserError
from hpcgpu.host import spec as spec_module
from hpcgpu.host.spec import parse_spec


def spec_of(values: int) -> str:
    # mapping, entry, {..}, task, m:f, args, [..], task_args, {..}: 9 nodes, then one per list item
    # and two per task_args pair
    items = 2 - (values - 9) % 2
    pairs = (values - 9 - items) // 2
    assert 9 + items + 2 * pairs == values
    return ("entry:\n  task: m:f\n  args: [" + ", ".join(["a"] * items) + "]\n  task_args:\n"
            + "".join(f"    k{i}: 1\n" for i in range(pairs)))


def test_the_bound_is_the_documented_20000():
    assert spec_module.MAX_SPEC_NODES == 20_000


@pytest.mark.parametrize("bound", [20, 21])
def test_a_spec_of_exactly_the_bound_loads_and_one_value_more_is_refused(monkeypatch, bound):
    # a small bound keeps this fast; test_spec_bounds.py refuses a real spec of over 20000 values
    monkeypatch.setattr(spec_module, "MAX_SPEC_NODES", bound)
    assert parse_spec(spec_of(bound)).entry.task == "m:f"
    with pytest.raises(UserError, match=f"more than {bound} values"):
        parse_spec(spec_of(bound + 1))
