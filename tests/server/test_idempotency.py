"""Idempotency-Key decisions: replay, a new request, or the same key with another body."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from conveyor.protocol import DeployRequest
from conveyor.server.idempotency import KEEP, Stored, fingerprint, scope, verdict

NOW = datetime(2026, 12, 5, 12, 0)
BODY = fingerprint(DeployRequest(release="abc1234-1"))


@pytest.mark.parametrize(
    ("stored", "body", "expected"),
    [
        (None, BODY, "new"),
        (Stored(BODY, NOW - timedelta(minutes=5)), BODY, "replay"),
        (Stored(BODY, NOW - timedelta(minutes=5)), fingerprint(DeployRequest()), "mismatch"),
        (Stored(BODY, NOW - KEEP), BODY, "new"),  # kept a day, then forgotten
        (Stored(BODY, NOW - KEEP), fingerprint(None), "new"),
    ],
)
def test_verdict(stored: Stored | None, body: str, expected: str) -> None:
    assert verdict(stored, body, NOW) == expected


def test_the_fingerprint_is_of_the_request_as_parsed() -> None:
    assert fingerprint(DeployRequest()) == fingerprint(DeployRequest(release=None, force=False))
    assert fingerprint(DeployRequest()) != fingerprint(DeployRequest(force=True))
    assert fingerprint(None) == fingerprint(None)


def test_a_key_is_scoped_to_its_route() -> None:
    deploy = scope("POST", "/api/apps/shop/environments/production/deploy", "k1")
    assert deploy != scope("POST", "/api/apps/shop/environments/staging/deploy", "k1")
    assert deploy != scope("POST", "/api/apps/shop/environments/production/deploy", "k2")
    assert len(deploy) == 64
