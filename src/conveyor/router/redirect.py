"""Answers the router gives itself on a plain shared port: HTTP to HTTPS, ACME HTTP-01.

An app with `tls.redirect_http` gets its plain HTTP requests answered with a 308 to the
same host and path over HTTPS (on the shared HTTPS port); the ACME challenges the agent
set (`PUT /challenges`) are answered on every name, before any app is picked, so that a
certificate can be obtained for a name whose app redirects (or is not routed yet).
"""

from __future__ import annotations

from collections.abc import Mapping

ACME_PATH = b"/.well-known/acme-challenge/"


def https_redirect(host: bytes, port: int, url: bytes) -> bytes:
    """A 308 (the method and body kept) to https://host[:port]/url; closes the connection."""
    name = host.strip()
    if name.startswith(b"["):
        name = name.split(b"]", 1)[0] + b"]"
    else:
        name = name.rsplit(b":", 1)[0] if b":" in name else name
    where = b"https://" + name + (b"" if port == 443 else b":%d" % port) + url
    body = b"redirecting to " + where + b"\n"
    return (
        b"HTTP/1.1 308 Permanent Redirect\r\nLocation: %s\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (where, len(body), body)
    )


def acme_answer(challenges: Mapping[str, str], url: bytes) -> tuple[int, bytes]:
    """The key authorization of a challenge token (200), or 404."""
    token = url[len(ACME_PATH) :].split(b"?", 1)[0].decode("latin-1")
    answer = challenges.get(token)
    if answer is None:
        body = b"no such ACME challenge on this host\n"
        status, reason = 404, b"Not Found"
    else:
        body = answer.encode()
        status, reason = 200, b"OK"
    head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % (
        status,
        reason,
        len(body),
    )
    return status, head + b"Connection: close\r\n\r\n" + body
