"""Each variable the spec's `debug:` section sets says which key asked for it and where it is
documented (docs/architecture.md, "Environment defaults": the dry run prints `NAME=value (why; link)`),
so nobody has to guess where a variable came from."""

from __future__ import annotations

import pytest

from hpcgpu.host.envvars import debug_defaults, merge_under
from hpcgpu.host.spec import Debug
from tests.helpers.golden import assert_golden

NCCL_ENV = "https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html"
TORCH_DEBUG = "https://docs.pytorch.org/docs/stable/distributed.html#debugging-torch-distributed-applications"
FLIGHT = "https://docs.pytorch.org/tutorials/prototype/flight_recorder_tutorial.html"

ALL_ON = Debug(nccl="info", nccl_subsys=["INIT", "NET"], torch_distributed="detail", flight_recorder=True)


def by_name():
    return {d.name: d for d in debug_defaults(ALL_ON, "/r")}


@pytest.mark.parametrize("name, key", [
    ("NCCL_DEBUG", "debug.nccl"),
    ("NCCL_DEBUG_FILE", "debug.nccl"),
    ("NCCL_DEBUG_SUBSYS", "debug.nccl_subsys"),
    ("TORCH_DISTRIBUTED_DEBUG", "debug.torch_distributed"),
    ("TORCH_CPP_LOG_LEVEL", "debug.torch_distributed"),
    ("TORCH_NCCL_TRACE_BUFFER_SIZE", "debug.flight_recorder"),
    ("TORCH_NCCL_DUMP_ON_TIMEOUT", "debug.flight_recorder"),
    ("TORCH_FR_DUMP_TEMP_FILE", "debug.flight_recorder"),
])
def test_each_debug_variable_names_the_spec_key_that_asked_for_it(name, key):
    why = by_name()[name].why
    assert why == key or why.startswith(key + ":"), why


@pytest.mark.parametrize("name, link", [
    ("NCCL_DEBUG", NCCL_ENV + "#nccl-debug"),
    ("NCCL_DEBUG_FILE", NCCL_ENV + "#nccl-debug-file"),
    ("NCCL_DEBUG_SUBSYS", NCCL_ENV + "#nccl-debug-subsys"),
    ("TORCH_DISTRIBUTED_DEBUG", TORCH_DEBUG),
    ("TORCH_CPP_LOG_LEVEL", TORCH_DEBUG),
    ("TORCH_NCCL_TRACE_BUFFER_SIZE", FLIGHT),
    ("TORCH_NCCL_DUMP_ON_TIMEOUT", FLIGHT),
    ("TORCH_FR_DUMP_TEMP_FILE", FLIGHT),
    ("OMP_NUM_THREADS", "https://docs.pytorch.org/docs/stable/elastic/run.html"),
])
def test_each_debug_variable_links_the_documentation_of_that_variable(name, link):
    assert by_name()[name].link == link


def test_the_notes_of_every_debug_variable():
    # what the dry run and the node's log print when every debug option is on (golden: review a change)
    notes = merge_under(debug_defaults(ALL_ON, "/runs/demo-1"), {}, {}).notes
    assert_golden("env_notes_debug_all_on.txt", "\n".join(notes) + "\n")


@pytest.mark.parametrize("why, link", [
    ("", "https://example.org/x"),  # a link but no reason
    ("a reason", "http://example.org/x"),  # not https
    ("a reason", "example.org/x"),
])
def test_a_default_needs_both_a_reason_and_an_https_link(why, link):
    from hpcgpu.host.envvars import EnvDefault

    with pytest.raises(ValueError) as info:
        EnvDefault("MY_VAR", "1", why, link)
    message = str(info.value)
    assert "MY_VAR" in message and "reason" in message and "https://" in message
