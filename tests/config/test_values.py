from __future__ import annotations

import pytest

from conveyor.config import Batch, HttpProbe


@pytest.mark.parametrize(
    ("written", "n_hosts", "size"),
    [
        (1, 3, 1),
        (2, 3, 2),
        (5, 3, 3),  # never more than there are hosts
        ("2", 4, 2),
        ("25%", 4, 1),
        ("25%", 10, 2),  # shares round down...
        ("25%", 3, 1),  # ...but never below one host
        ("30%", 10, 3),
        ("50%", 3, 1),
        ("100%", 7, 7),
        ("1%", 1, 1),
        (3, 0, 1),
    ],
)
def test_batch_size(written: object, n_hosts: int, size: int) -> None:
    assert Batch.parse(written).size(n_hosts) == size


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (0, "a number of hosts"),
        (-1, "a number of hosts"),
        ("0%", "above 0%"),
        ("150%", "between 0% and 100%"),
        ("all", "a number of hosts"),
        (True, "a number of hosts"),
        (1.5, "a number of hosts"),
    ],
)
def test_batch_rejects(written: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Batch.parse(written)


def test_batch_spelling_round_trips() -> None:
    assert Batch.parse("25%").dump() == "25%"
    assert Batch.parse(2).dump() == 2


@pytest.mark.parametrize(
    ("written", "method", "path"),
    [
        ("GET /healthz", "GET", "/healthz"),
        ("POST  /api/ping?x=1", "POST", "/api/ping?x=1"),
        ("/healthz", "GET", "/healthz"),
        ("HEAD /", "HEAD", "/"),
    ],
)
def test_http_probe(written: str, method: str, path: str) -> None:
    probe = HttpProbe.parse(written)
    assert (probe.method, probe.path) == (method, path)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("FETCH /healthz", "an HTTP method"),
        ("get /healthz", "an HTTP method"),
        ("GET healthz", "starting with '/'"),
        ("GET /a /b", "like 'GET /healthz'"),
        (200, "like 'GET /healthz'"),
    ],
)
def test_http_probe_rejects(written: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        HttpProbe.parse(written)
