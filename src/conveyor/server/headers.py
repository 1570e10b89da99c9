"""Security headers on every response of the server: pages, API, webhooks, static files.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which would buffer the
server-sent event streams of the live pages): it only adds headers to the response's
start message, and never replaces one a route set itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The dashboard loads only its own scripts and stylesheets (htmx and its SSE extension are
# vendored under /static) and runs no inline script. Inline style *attributes* remain
# allowed: bar widths, timeline shares and 256-colour log text are data, not stylesheets;
# an injected attribute can restyle an element but run nothing nor load from elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# FastAPI's API docs pages (/docs: Swagger UI, /redoc) load their code, styles and fonts from
# CDNs and start it with an inline script. They show no data of their own (they fetch
# /openapi.json), so they get a policy that allows just those sources.
DOCS_PATHS = frozenset({"/docs", "/redoc"})
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
        "font-src 'self' https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.jsdelivr.net",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
SECURITY_HEADERS = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), *COMMON_HEADERS)
DOCS_HEADERS = (
    (b"content-security-policy", DOCS_CONTENT_SECURITY_POLICY.encode()),
    *COMMON_HEADERS,
)


class SecurityHeaders:
    """ASGI middleware: add SECURITY_HEADERS (DOCS_HEADERS on the API docs pages) to every
    HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = DOCS_HEADERS if scope.get("path") in DOCS_PATHS else SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in added if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
