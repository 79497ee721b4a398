"""The ranks' environment: defaults < spec env < the user's own environment, the debug section's
variables, and which names count as secrets (their values redacted in files, withheld for launch)."""

from __future__ import annotations

import pytest

from hpcgpu.contract.plan import REDACTED
from hpcgpu.host.envvars import EnvDefault, debug_defaults, merge_under
from hpcgpu.host.secrets import is_secret, redact, withheld
from hpcgpu.host.spec import Debug

# ---------------------------------------------------------------- merge_under

DEFAULTS = [
    EnvDefault("A_VAR", "1", "why a", "https://a"),
    EnvDefault("B_VAR", "2", "why b", "https://b"),
    EnvDefault("C_VAR", "3", "why c", "https://c"),
]


def test_a_default_nobody_set_is_added_with_its_reason():
    merged = merge_under(DEFAULTS, {}, {})
    assert merged.added == {"A_VAR": "1", "B_VAR": "2", "C_VAR": "3"}
    assert merged.notes == ["A_VAR=1 (why a; https://a)", "B_VAR=2 (why b; https://b)", "C_VAR=3 (why c; https://c)"]


def test_the_spec_env_beats_a_default():
    merged = merge_under(DEFAULTS, {"B_VAR": "spec"}, {})
    assert merged.added["B_VAR"] == "spec"
    assert "B_VAR=spec from the spec's env (default 2: why b; https://b)" in merged.notes


def test_the_users_value_beats_a_default_and_is_not_overridden():
    merged = merge_under(DEFAULTS, {}, {"A_VAR": "mine"})
    assert "A_VAR" not in merged.added  # the rank inherits the user's value from the node's environment
    assert "A_VAR: keeping your value mine (hpcgpu would set 1: why a; https://a)" in merged.notes


def test_the_users_value_beats_the_spec_env():
    merged = merge_under([], {"D_VAR": "spec", "E_VAR": "same", "F_VAR": "only-spec"},
                         {"D_VAR": "user", "E_VAR": "same"})
    assert "D_VAR" not in merged.added
    assert "D_VAR: spec env sets it, your environment's value wins" in merged.notes
    assert merged.added == {"E_VAR": "same", "F_VAR": "only-spec"}


def test_the_users_value_beats_both_a_default_and_the_spec_env():
    merged = merge_under(DEFAULTS, {"A_VAR": "spec"}, {"A_VAR": "mine"})
    assert "A_VAR" not in merged.added
    assert any(n.startswith("A_VAR: keeping your value mine") for n in merged.notes)


def test_notes_never_show_a_secret_value():
    defaults = [EnvDefault("HF_TOKEN", "dflt", "tok", "https://t"), EnvDefault("MY_API_KEY", "dflt", "key", "https://k")]
    merged = merge_under(defaults, {"MY_API_KEY": "spec-secret"}, {"HF_TOKEN": "user-secret"})
    text = "\n".join(merged.notes)
    assert "user-secret" not in text and "spec-secret" not in text
    assert f"HF_TOKEN: keeping your value {REDACTED}" in text
    assert f"MY_API_KEY={REDACTED} from the spec's env" in text
    # the value itself still reaches the ranks (the plan redacts it when written)
    assert merged.added["MY_API_KEY"] == "spec-secret"


# ---------------------------------------------------------------- debug_defaults


def names(defaults):
    return {d.name: d.value for d in defaults}


def test_debug_off_sets_only_the_thread_default():
    # not TORCH_NCCL_ASYNC_ERROR_HANDLING=1: torch's own default (3, since 2.2) is right, and the
    # abort that 1 asks for can hang (pytorch/pytorch#110723)
    assert names(debug_defaults(Debug(), "/r")) == {"OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("level", ["warn", "info", "trace"])
def test_debug_nccl(level):
    got = names(debug_defaults(Debug(nccl=level), "/r"))
    assert got["NCCL_DEBUG"] == level.upper()
    assert got["NCCL_DEBUG_FILE"] == "/r/logs/nccl.%h.%p.log"
    assert "TORCH_DISTRIBUTED_DEBUG" not in got


def test_debug_nccl_subsys_is_comma_joined():
    got = names(debug_defaults(Debug(nccl_subsys=["INIT", "NET"]), "/r"))
    assert got["NCCL_DEBUG_SUBSYS"] == "INIT,NET" and "NCCL_DEBUG" not in got


@pytest.mark.parametrize("level", ["info", "detail"])
def test_debug_torch_distributed(level):
    got = names(debug_defaults(Debug(torch_distributed=level), "/r"))
    assert got["TORCH_DISTRIBUTED_DEBUG"] == level.upper() and got["TORCH_CPP_LOG_LEVEL"] == "INFO"
    assert "NCCL_DEBUG" not in got


def test_debug_flight_recorder():
    got = names(debug_defaults(Debug(flight_recorder=True), "/r"))
    assert got["TORCH_NCCL_TRACE_BUFFER_SIZE"] == "2000"
    assert got["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"
    assert got["TORCH_FR_DUMP_TEMP_FILE"] == "/r/flight/rank_"


def every_default() -> list:
    """Every EnvDefault hpcgpu can set: all debug options on, and the one-node rank defaults."""
    from hpcgpu.host.plan import rank_defaults
    from hpcgpu.host.spec import parse_spec

    one_node = parse_spec("resources: {nodes: 1}\n"
                          "debug: {nccl: info, nccl_subsys: [ALL], torch_distributed: detail, flight_recorder: true}\n")
    return rank_defaults(one_node, "/r")


def test_every_default_has_a_reason_and_a_link():
    every = every_default()
    assert len(every) >= 10 and {"OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME"} <= {d.name for d in every}
    for d in every:
        assert d.why and d.link.startswith("https://"), d


def test_a_default_without_a_link_cannot_be_made():
    with pytest.raises((TypeError, ValueError)):
        EnvDefault("X", "1", "why")
    with pytest.raises(ValueError):
        EnvDefault("X", "1", "why", "")


def test_the_notes_say_why_and_where_to_read_more():
    merged = merge_under([EnvDefault("OMP_NUM_THREADS", "1", "one thread per rank", "https://example.org/omp")], {}, {})
    assert merged.notes == ["OMP_NUM_THREADS=1 (one thread per rank; https://example.org/omp)"]


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("name", [
    "HF_TOKEN", "hf_token", "WANDB_API_KEY", "wandb_api_key", "AWS_SECRET_ACCESS_KEY", "Client_Secret",
    "DB_PASSWORD", "db_password", "MYSQL_PASSWD", "GOOGLE_APPLICATION_CREDENTIALS", "credential_file",
    "HTTP_AUTH", "Auth_Header",
])
def test_credential_names_are_secret(name):
    assert is_secret(name)


@pytest.mark.parametrize("name", [
    "PATH", "HOME", "PWD", "NCCL_DEBUG", "NCCL_IB_HCA", "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "OMP_NUM_THREADS",
    "PYTHONPATH", "HPCGPU_RUN_DIR", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    "PASS", "API_PASS", "MY_PW",  # not in the pattern: only the listed words count
])
def test_ordinary_names_are_not_secret(name):
    assert not is_secret(name)


@pytest.mark.parametrize("name", [
    # A credential word counts only as a whole part of the name: these once matched as substrings,
    # so their values were redacted in plan.json and a resumed run refused to start without them.
    "MONKEY", "KEYBOARD", "HOTKEY",  # KEY
    "TOKENIZERS_PARALLELISM",  # TOKEN (Hugging Face tokenizers' switch)
    "AUTHOR", "AUTHORITY", "OAUTH_CLIENT",  # AUTH
    "SECRETARY",  # SECRET
])
def test_words_inside_other_words_are_not_secrets(name):
    assert not is_secret(name)


@pytest.mark.parametrize("name", ["SSH_AUTH_SOCK", "API_KEYS", "OPENAI_APIKEY", "GPG_PASSPHRASE", "Slack_Tokens"])
def test_a_credential_word_anywhere_among_the_parts_is_a_secret(name):
    assert is_secret(name)  # SSH_AUTH_SOCK is only a socket path: redacting it is harmless


def test_redact_replaces_only_secret_values_and_copies():
    env = {"HF_TOKEN": "t0k", "NCCL_DEBUG": "INFO", "db_password": "pw"}
    out = redact(env)
    assert out == {"HF_TOKEN": REDACTED, "NCCL_DEBUG": "INFO", "db_password": REDACTED}
    assert env["HF_TOKEN"] == "t0k"  # the input is left alone


def test_withheld_keeps_real_secret_values_only():
    env = {"HF_TOKEN": "t0k", "NCCL_DEBUG": "INFO", "WANDB_API_KEY": REDACTED, "MY_SECRET": ""}
    # a value already REDACTED (a resumed run's spec.yaml) is not a value to pass on
    assert withheld(env) == {"HF_TOKEN": "t0k", "MY_SECRET": ""}


def test_no_plan_forces_nccl_async_error_handling():
    # torch's default (3 since 2.2) is right; 1 can hang in the abort (pytorch/pytorch#110723)
    from pathlib import Path

    from tests.helpers.plans import plan_for

    plans = [plan_for(""), plan_for("resources: {gpus_per_node: 2}\n", visible_gpus=2),
             plan_for("resources: {nodes: 2, gpus_per_node: 8}\n", backend="slurm", run_id="s-1", run_dir="/s/s-1")]
    for plan in plans:
        assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in plan.env
        assert not any("TORCH_NCCL_ASYNC_ERROR_HANDLING" in n for n in plan.env_notes)
    golden = Path(__file__).resolve().parents[1] / "golden_data"
    assert not [p.name for p in golden.iterdir() if "TORCH_NCCL_ASYNC_ERROR_HANDLING" in p.read_text()]


def test_the_dry_run_shows_each_defaults_link():
    from hpcgpu.host.plan import describe_plan
    from tests.helpers.plans import plan_for

    text = describe_plan(plan_for(""))
    assert "OMP_NUM_THREADS=1 (avoid N ranks x all-cores thread oversubscription; https://" in text
