"""The doctor's table, JSON and markdown report never show a secret variable's value (host.secrets
decides, as for runs): NCCL_IB_HCA_KEY by its name, a URL with a password by its value, a name in
HPCGPU_SECRET_ENV because the user said so."""

from __future__ import annotations

import json

from hpcgpu.contract.plan import REDACTED
from hpcgpu.doctor.checks_env import check_nccl_env
from hpcgpu.doctor.render import render_json, render_report, render_table
from hpcgpu.doctor.result import CheckResult
from hpcgpu.doctor.runner import run_doctor, scrubbed
from tests.helpers.doctor_fakes import fake_probe

ENV = {
    "NCCL_IB_HCA_KEY": "hca-key-value-3b7e",  # secret by name
    "NCCL_PROXY_URL": "http://proxy:pr0xy-pw-66aa@proxy.example:3128",  # secret by value
    "NCCL_IB_HCA": "mlx5_9",  # secret because it is marked (and shorter than anything scrubbed)
    "NCCL_SOCKET_IFNAME": "eth0",
    "HPCGPU_SECRET_ENV": "NCCL_IB_HCA",
}
SECRETS = ("hca-key-value-3b7e", "pr0xy-pw-66aa", "mlx5_9")


def test_nccl_env_lists_secret_variables_redacted(tmp_path):
    (tmp_path / "sys/class/net/eth0").mkdir(parents=True)
    r = check_nccl_env(fake_probe(tmp_path, env=ENV))
    assert r.data["set"] == {"NCCL_IB_HCA": REDACTED, "NCCL_IB_HCA_KEY": REDACTED, "NCCL_PROXY_URL": REDACTED,
                             "NCCL_SOCKET_IFNAME": "eth0"}
    # the check still judges the real value: mlx5_9 matches no InfiniBand device here
    assert r.status == "warn" and f"NCCL_IB_HCA={REDACTED} matches no InfiniBand device" in r.detail
    assert not any(s in r.detail + r.hint + json.dumps(r.data) for s in SECRETS)


def test_no_rendering_of_a_whole_doctor_run_shows_a_secret(tmp_path):
    (tmp_path / "sys/class/net/eth0").mkdir(parents=True)
    results = run_doctor(fake_probe(tmp_path, env=ENV), functional=False)
    assert "nccl_env" in {r.name for r in results}
    for text in (render_table(results), render_json(results, "0"), render_report(results, "0")):
        assert f"NCCL_IB_HCA={REDACTED}" in text  # the warning, in every rendering
        assert not [s for s in SECRETS if s in text], text
    assert f'"NCCL_IB_HCA_KEY": "{REDACTED}"' in render_json(results, "0")  # the listing, in --json and --report


def test_a_secret_quoted_anywhere_in_a_result_is_scrubbed():
    env = {"HF_TOKEN": "hf_abcdefghijkl", "DATABASE_URL": "postgres://u:db-pw-1234@h/db", "PLAIN": "plain-value"}
    r = CheckResult("x", "fail", "torch said: bad token hf_abcdefghijkl", "check postgres://u:db-pw-1234@h/db",
                    {"output": ["plain-value", "hf_abcdefghijkl"]})
    got = scrubbed(r, env)
    assert got.detail == f"torch said: bad token {REDACTED}" and got.hint == f"check {REDACTED}"
    assert got.data == {"output": ["plain-value", REDACTED]} and got.name == "x" and got.status == "fail"
