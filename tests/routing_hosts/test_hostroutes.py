import pytest

from conveyor.hostroutes import (
    Claim,
    RouteTable,
    check_domain,
    check_prefix,
    claims,
    clashes,
    strip_url,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("shop.example.com", "shop.example.com"),
        ("*.example.com", "*.example.com"),
        ("*", "*"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a-b.example.com.", "a-b.example.com"),
    ],
)
def test_valid_domains(value: str, expected: str) -> None:
    assert check_domain(value) == expected


@pytest.mark.parametrize(
    "value",
    ["Shop.example.com", "shop.example.com:80", "localhost", "-a.example.com", "a..b", "a/b.c", ""],
)
def test_invalid_domains(value: str) -> None:
    with pytest.raises(ValueError):
        check_domain(value)


def test_prefixes() -> None:
    assert check_prefix("/api/") == "/api"
    for bad in ("api", "/a?b", "/a b"):
        with pytest.raises(ValueError):
            check_prefix(bad)


def _table() -> RouteTable[str]:
    table: RouteTable[str] = RouteTable()
    table.add("shop", ["shop.example.com", "www.shop.example.com"], "", False)
    table.add("api", ["shop.example.com"], "/api", True)
    table.add("kept", ["shop.example.com"], "/api/v2", False)
    table.add("wild", ["*.example.com"], "", False)
    return table


@pytest.mark.parametrize(
    ("host", "url", "expected"),
    [
        (b"shop.example.com", b"/", ("shop", 0)),
        (b"SHOP.example.com:8080", b"/x", ("shop", 0)),
        (b"shop.example.com", b"/api", ("api", 4)),
        (b"shop.example.com", b"/api/x?q=1", ("api", 4)),
        (b"shop.example.com", b"/apix", ("shop", 0)),
        (b"shop.example.com", b"/api/v2/x", ("kept", 0)),
        (b"www.shop.example.com", b"/api", ("shop", 0)),
        (b"a.b.example.com", b"/", ("wild", 0)),
        (b"other.org", b"/", None),
        (None, b"/", None),
    ],
)
def test_select(host: bytes | None, url: bytes, expected: tuple[str, int] | None) -> None:
    picked = _table().select(host, url)
    assert (None if picked is None else tuple(picked)) == expected


def test_catch_all() -> None:
    table = _table()
    table.add("default", ["*"], "", False)
    picked = table.select(b"other.org", b"/")
    assert picked is not None and picked.target == "default"


def test_strip_url() -> None:
    assert strip_url(b"/api/x?q", 4) == b"/x?q"
    assert strip_url(b"/api?q", 4) == b"/?q"
    assert strip_url(b"/api", 4) == b"/"


def test_clashes_name_both_apps() -> None:
    mine = claims(["shop.example.com"], "/api")
    message = clashes("b", mine, {"a": [Claim("shop.example.com", "/api")]})
    assert message is not None and "app a" in message and "app b" in message
    assert clashes("b", mine, {"a": [Claim("shop.example.com", "")]}) is None
    assert clashes("a", mine, {"a": mine}) is None
