"""Host and path routing on a shared port (issue 14 point 1): the pure decisions.

Which host names and path prefixes an app claims, whether two apps' claims clash, and
which app answers a request by its Host header and path. Both wings may import this
module (like `routespec`): the server checks clashes at deploy admission, the routers
select with `RouteTable`. A domain is kept as a plain string so that a per-domain `tls:`
can later be added beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

CATCH_ALL = "*"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_domain(value: str) -> str:
    """A host name as routed: lowercase ASCII (IDNA), no port; `*.example.com` or `*`."""
    text = value.strip()
    if text == CATCH_ALL:
        return text
    if not text or ":" in text or "/" in text or text != text.lower():
        raise ValueError(
            f"expected a lowercase host name without port or path, like shop.example.com, "
            f"got {value!r}"
        )
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{value!r} is not a valid host name: {exc}") from None
    labels = ascii_name.rstrip(".").split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(_LABEL.match(lb) for lb in labels):
        raise ValueError(
            f"{value!r} is not a valid host name (expected labels of letters, digits and "
            "hyphens separated by dots, like shop.example.com)"
        )
    return ("*." if wildcard else "") + ".".join(labels)


def check_prefix(value: str) -> str:
    """A path prefix: starts with '/', no query or fragment; kept without trailing '/'."""
    if not value.startswith("/") or any(c in value for c in "?# \t"):
        raise ValueError(f"expected a path prefix like /api, got {value!r}")
    return value.rstrip("/")


class Claim(NamedTuple):
    domain: str
    prefix: str  # "" for the whole host


def claims(domains: Iterable[str], prefix: str | None) -> list[Claim]:
    return [Claim(d, check_prefix(prefix) if prefix else "") for d in domains]


def clashes(app: str, mine: Iterable[Claim], others: Mapping[str, Iterable[Claim]]) -> str | None:
    """A message naming both apps when another app already claims one of `mine`."""
    wanted = set(mine)
    for other, theirs in sorted(others.items()):
        if other == app:
            continue
        for claim in sorted(wanted.intersection(theirs)):
            where = claim.domain + (claim.prefix or "")
            return (
                f"{where} is already served by app {other} on this host; app {app} cannot "
                "claim it too (change its domains or path_prefix, or remove it from "
                f"{other}); nothing changed"
            )
    return None


class Picked(NamedTuple, Generic[T]):
    target: T
    strip: int  # bytes to strip from the start of the path (0: keep it)


class RouteTable(Generic[T]):
    """Selection: the exact host, then the longest wildcard, then `*`; within a host, the
    longest path prefix that matches whole segments."""

    def __init__(self) -> None:
        self._hosts: dict[str, list[tuple[bytes, T, bool]]] = {}

    def add(self, target: T, domains: Iterable[str], prefix: str, strip: bool) -> None:
        for domain in domains:
            entries = self._hosts.setdefault(domain, [])
            entries.append((prefix.encode(), target, strip))
            entries.sort(key=lambda e: len(e[0]), reverse=True)

    def select(self, host: bytes | None, url: bytes) -> Picked[T] | None:
        name = _host_name(host)
        path = url.split(b"?", 1)[0]
        for key in _candidates(name):
            for prefix, target, strip in self._hosts.get(key, ()):
                if not prefix or path == prefix or path.startswith(prefix + b"/"):
                    return Picked(target, len(prefix) if strip else 0)
        return None


def _host_name(host: bytes | None) -> str:
    if not host:
        return ""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text.split("]", 1)[0] + "]"
    return text.rsplit(":", 1)[0].rstrip(".") if ":" in text else text.rstrip(".")


def _candidates(name: str) -> list[str]:
    out = [name] if name else []
    labels = name.split(".")
    out += ["*." + ".".join(labels[i:]) for i in range(1, len(labels) - 1)]
    out.append(CATCH_ALL)
    return out


def strip_url(url: bytes, strip: int) -> bytes:
    """The URL relayed after stripping `strip` bytes of prefix (never empty)."""
    rest = url[strip:]
    return rest if rest.startswith(b"/") else b"/" + rest
