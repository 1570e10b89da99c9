"""Tokens taken on trust while the database is away (server/auth.py Verified.last).

No revocation can be committed while the database is away, so a token is trusted then
exactly as far as it was when the database went: verified within the trust period
before, and not revoked through this server since.
"""

from __future__ import annotations

import time

import pytest

from conveyor.server.auth import Caller, Verified
from conveyor.store import changes

CALLER = Caller(token_id=1, name="ci", role="viewer")


@pytest.mark.parametrize(
    ("away_after", "revoked", "trusted"),
    [
        (3.0, False, True),  # verified 3 s before the database went
        (0.0, False, True),  # at the moment it went
        (10.0, False, False),  # 10 s before: past the trust period (5 s)
        (3.0, True, False),  # revoked through this server since: never
    ],
)
def test_a_token_is_trusted_as_far_as_it_was_when_the_database_went(
    away_after: float, revoked: bool, trusted: bool
) -> None:
    verified = Verified(ttl=5.0)
    verified.put("digest", changes.generation("tokens"), CALLER)
    if revoked:
        changes._generations["tokens"] += 1  # what a committed revocation does
    found = verified.last("digest", time.monotonic() + away_after)
    assert (found == CALLER) is trusted
    assert verified.last("other", time.monotonic()) is None  # never verified here
