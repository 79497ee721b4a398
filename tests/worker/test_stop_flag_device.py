"""stop.should_stop agrees through one all-reduce of a flag that must sit where the process group's
backend can reduce it: on the device the caller names, else the backend's (CPU for gloo, the current
GPU for NCCL), never on torch's default device, which a task may have changed
(torch.set_default_device). A one-rank gloo group, in this process; "meta" stands for a default
device gloo cannot reduce."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist

from hpcgpu.worker import stop


@pytest.fixture
def one_rank_group(tmp_path, monkeypatch):
    monkeypatch.setattr(stop, "_cooperative", stop._cooperative)  # should_stop marks the process cooperative
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    stop.reset()
    yield
    stop.reset()
    tdist.destroy_process_group()


def test_without_a_device_the_flag_goes_to_the_backends_device_not_the_default_one(one_rank_group):
    with torch.device("meta"):
        assert stop.should_stop() is False
        stop.request("SIGTERM")
        assert stop.should_stop() is True


def test_the_flag_goes_to_the_device_the_caller_names(one_rank_group):
    with torch.device("meta"):
        assert stop.should_stop(torch.device("cpu")) is False


def test_a_nccl_group_reduces_the_flag_on_the_current_gpu(monkeypatch):
    monkeypatch.setattr(tdist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert stop._collective_device() == torch.device("cuda", 3)
