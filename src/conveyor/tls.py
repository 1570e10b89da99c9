"""The TLS context that the httpx clients of one conveyor process share.

httpx builds a context for each client it makes and loads the CA bundle into it: about
25 ms of CPU each time. Code that makes clients often (health checks while instances
start, a judged step reading Prometheus every second, verify checks) passes this one.
"""

from __future__ import annotations

import ssl
from functools import cache

import httpx


@cache
def client_tls() -> ssl.SSLContext:
    """httpx's default context (CA bundle, SSL_CERT_FILE / SSL_CERT_DIR), made once."""
    return httpx.create_ssl_context()


__all__ = ["client_tls"]
