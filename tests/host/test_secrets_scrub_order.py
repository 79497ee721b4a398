"""scrub (host.secrets): a secret that contains another secret is replaced whole, never leaving the
part outside the shorter one in a report ("longest first")."""

from __future__ import annotations

from hpcgpu.contract.plan import REDACTED
from hpcgpu.host.secrets import scrub


def test_a_secret_that_contains_another_is_replaced_whole():
    # the shorter secret sorts first alphabetically and sits at the end of the longer one: replacing
    # it first would leave "aaaa-prefix-" of the longer secret readable
    env = {"SHORT_TOKEN": "zzzz-tail-9", "LONG_TOKEN": "aaaa-prefix-zzzz-tail-9"}
    assert scrub("got aaaa-prefix-zzzz-tail-9 and zzzz-tail-9", env) == f"got {REDACTED} and {REDACTED}"


def test_the_longer_secret_goes_whole_in_lists_and_dicts_too():
    env = {"A_KEY": "abcdefgh", "B_KEY": "xyzabcdefgh"}  # the shorter one is a suffix of the longer
    assert scrub(["xyzabcdefgh", {"k": "v=xyzabcdefgh;"}], env) == [REDACTED, {"k": f"v={REDACTED};"}]
