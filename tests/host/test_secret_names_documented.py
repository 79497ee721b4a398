"""Which variables are secrets, word for word as docs/security.md ("Secrets in the environment")
lists them: a credential word as a whole `_`-separated part of the name, in any case; credentials in
a URL's user part; never a word inside another word."""

from __future__ import annotations

import pytest

from hpcgpu.host.secrets import has_url_credentials, is_secret, is_secret_name

#: docs/security.md: TOKEN(S), KEY(S), APIKEY, SECRET(S), PASSWORD(S), PASSWD, PASSPHRASE, CREDENTIAL(S), AUTH
DOCUMENTED_WORDS = ["TOKEN", "TOKENS", "KEY", "KEYS", "APIKEY", "SECRET", "SECRETS", "PASSWORD", "PASSWORDS",
                    "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "AUTH"]


@pytest.mark.parametrize("word", DOCUMENTED_WORDS)
def test_each_documented_word_makes_a_secret_as_a_whole_part_in_any_case(word):
    for name in (word, f"MY_{word}", f"{word}_FILE", f"A_{word}_B", f"my_{word.lower()}", f"X_{word.title()}"):
        assert is_secret_name(name) and is_secret(name, "plain"), name


@pytest.mark.parametrize("word", DOCUMENTED_WORDS)
def test_a_documented_word_inside_another_word_is_not_a_secret(word):
    for name in (f"MY{word}", f"{word}X", f"X{word}_Y", f"A_{word}ISH"):
        assert not is_secret_name(name), name


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "NCCL_IB_HCA_KEY"])
def test_the_documented_example_names_are_secrets(name):
    assert is_secret(name, "x")


def test_the_documented_counter_example_is_not_a_secret():
    assert not is_secret("TOKENIZERS_PARALLELISM", "false")


@pytest.mark.parametrize("value", ["postgres://app:pw@db/app", "redis://:pw@cache", "https://ghp_x@github.com/o/r",
                                   "ssh://git@host/repo"])
def test_the_documented_url_credentials_are_secrets(value):
    assert has_url_credentials(value) and is_secret("SETTING", value)


@pytest.mark.parametrize("value", ["tcp://host:29500", "user@host", "git@host:repo", "mailto:a@b", "https://host/@x"])
def test_the_documented_non_credentials_are_not_secrets(value):
    assert not has_url_credentials(value) and not is_secret("SETTING", value)
