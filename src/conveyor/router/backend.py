"""One keep-alive connection to an instance: parses its responses and relays them to the client."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

if TYPE_CHECKING:
    # Type-only cycle, on purpose: an exchange owns its backend connection and the
    # connection reports the response back to it; at run time only exchange imports this.
    from conveyor.router.exchange import Exchange
    from conveyor.router.target import Upstream

log = logging.getLogger("conveyor.router")

# Longest response head accepted from an instance.
MAX_HEAD = 1024 * 1024

# Response headers that describe one hop, not the message: never relayed as they are.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


# Header lines of a raw head (which starts with the status line) that matter to framing.
_FRAMING_RE = re.compile(
    rb"\r\n(connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|content-length)[ \t]*:",
    re.IGNORECASE,
)


def _rewrite_head(block: bytes, upgrade: bool) -> tuple[bytearray, bool]:
    """The head to relay when the instance's has hop-by-hop headers or is not HTTP/1.1.

    Returns the status line and headers (each line ending in CRLF, no blank line) and
    whether the instance used Transfer-Encoding.
    """
    lines = block.split(b"\r\n")
    head = bytearray(b"HTTP/1.1" + lines[0][8:] + b"\r\n")
    headers = [(line.split(b":", 1)[0].strip().lower(), line) for line in lines[1:]]
    drop = set(_HOP_BY_HOP)
    for name, line in headers:
        if name == b"connection":
            drop.update(t.strip().lower() for t in line.split(b":", 1)[1].split(b","))
    if upgrade:
        drop.discard(b"upgrade")
    chunked_in = False
    for name, line in headers:
        if name == b"transfer-encoding":
            chunked_in = True
        if name not in drop:
            head += line + b"\r\n"
    return head, chunked_in


class BackendConnection(asyncio.Protocol):
    """A connection to one target; serves one exchange at a time, then goes back to the pool."""

    __slots__ = (
        "chunked_out",
        "closed",
        "cut",
        "done",
        "eof",
        "exchange",
        "got_bytes",
        "head_out",
        "idle_ticks",
        "informational",
        "keep_alive",
        "out",
        "parser",
        "preview",
        "raw",
        "read_paused",
        "reset_parser",
        "reused",
        "status",
        "timed_out",
        "transport",
        "tunnel",
        "until_eof",
        "upstream",
    )

    def __init__(self, upstream: Upstream, *, preview: bool = False) -> None:
        self.upstream = upstream
        # Carries a preview request (see PREVIEW_HEADER): a drain timeout leaves it alone.
        self.preview = preview
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        # Served a response before: a failure before any answer may be the stale-pool race.
        self.reused = False
        self.idle_ticks = 0
        self.tunnel = False
        self.eof = False
        self.read_paused = False
        # Cut by the router (drain timeout, backend timeout): never retried.
        self.cut = False
        self.timed_out = False
        self.out: list[bytes | bytearray] = []
        self.reset()

    def reset(self) -> None:
        """Forget the previous response (status 0 means: nothing to forget)."""
        self.status = 0
        self.raw: bytes | bytearray = b""
        self.got_bytes = False
        self.head_out = False
        self.chunked_out = False
        self.until_eof = False
        self.done = False
        self.keep_alive = False
        self.informational = False
        self.reset_parser = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.upstream.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.upstream.forget(self)
        ex = self.exchange
        if ex is None:
            return
        self.exchange = None
        if self.tunnel:
            ex.tunnel_closed()
            return
        if self.until_eof and self.head_out and not self.cut:
            # A response delimited by the connection's end has just ended.
            if self.chunked_out:
                self.out.append(b"0\r\n\r\n")
            self._flush(ex)
            self.keep_alive = False
            ex.response_complete(self)
            return
        ex.backend_lost(self)

    def eof_received(self) -> bool | None:
        ex = self.exchange
        if self.tunnel and ex is not None:
            self.eof = True
            client = ex.client
            if client.eof:
                client.close()
                self.close()
            elif not client.closed and client.transport.can_write_eof():
                client.transport.write_eof()
            return True
        return None

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.client.set_backend_full(True)

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.client.set_backend_full(False)

    def data_received(self, data: bytes) -> None:
        self.idle_ticks = 0
        ex = self.exchange
        if ex is None:
            # An idle pooled connection has nothing to say; whatever it sends is garbage.
            self.close()
            return
        if self.tunnel:
            ex.client.write(data)
            return
        self.got_bytes = True
        if not self.head_out:
            # Keep the bytes of the head being received (usually one chunk, not copied).
            raw = self.raw
            if raw:
                self.raw = raw = raw + data
                if len(raw) > MAX_HEAD:
                    self._broken(ex, ValueError(f"response head over {MAX_HEAD} bytes"))
                    return
            else:
                self.raw = data
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._flush(ex)
            self.tunnel = True
            ex.start_tunnel(self, data[exc.args[0] :])
            return
        except HttpParserError as exc:
            self._broken(ex, exc.__context__ or exc)
            return
        if self.out:
            self._flush(ex)
        if self.done:
            if self.reset_parser:
                self.parser = HttpResponseParser(self)
            ex.response_complete(self)

    def _broken(self, ex: Exchange, error: BaseException) -> None:
        log.warning(
            "bad response from instance",
            extra={
                "release": self.upstream.release,
                "target": f"{self.upstream.host}:{self.upstream.port}",
                "error": repr(error),
            },
        )
        if self.out:
            self._flush(ex)
        self.cut = True
        self.exchange = None
        self.close()
        ex.backend_lost(self)

    # -- what the exchange calls -------------------------------------------

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def drain_expired(self) -> None:
        """The drain timeout of a retired target passed: cut whatever is still running."""
        self.cut = True
        if self.transport is not None:
            self.transport.abort()

    def time_out(self) -> None:
        """The instance stayed silent longer than the backend timeout."""
        self.cut = True
        self.timed_out = True
        if self.transport is not None:
            self.transport.abort()

    def _flush(self, ex: Exchange) -> None:
        out = self.out
        ex.client.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # -- httptools callbacks -----------------------------------------------
    # No on_header: the head is taken whole from the bytes received (see data_received),
    # which spares a Python call per header; llhttp has already validated it.

    def on_headers_complete(self) -> None:
        # Complexity kept on purpose: once per response on the proxy's hot path, where a
        # call per decision costs measurable throughput; each branch is one framing case
        # (HEAD, 1xx/204/304, Upgrade, close-delimited, chunked, Content-Length).
        ex = self.exchange
        assert ex is not None
        raw = self.raw
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("response head not found in the bytes received")
        status = self.parser.get_status_code()
        self.status = status
        if status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: relay (HTTP/1.0 clients don't know them).
            self.informational = True
            if not ex.http10:
                self.out.append(bytes(raw[: end + 4]))
            self.raw = raw[end + 4 :]
            return
        self.raw = b""
        self.keep_alive = self.parser.should_keep_alive()
        upgrade = status == 101
        length = False
        verbatim = raw.startswith(b"HTTP/1.1 ")
        for name in _FRAMING_RE.findall(raw, 0, end + 2):
            if len(name) == 14 and name.lower() == b"content-length":
                length = True
            else:
                verbatim = False
        chunked_in = False
        if verbatim:
            # The common case: nothing to take out, relay the head as it came.
            head = bytearray(raw[: end + 2])
        else:
            head, chunked_in = _rewrite_head(bytes(raw[:end]), upgrade)
        client_keep = ex.keep_alive and not ex.client.closing
        if upgrade:
            head += b"Connection: Upgrade\r\n"
        elif ex.head_request:
            # llhttp cannot be told that a response to HEAD has no body: finish here and
            # give the connection a fresh parser.
            self.done = True
            self.reset_parser = True
        elif status == 204 or status == 304:
            pass
        elif length and not chunked_in:
            pass  # a Content-Length the client can rely on
        else:
            self.until_eof = not chunked_in
            if ex.http10:
                client_keep = False
            else:
                head += b"Transfer-Encoding: chunked\r\n"
                self.chunked_out = True
        if not upgrade:
            if not client_keep:
                ex.keep_alive = False
                head += b"Connection: close\r\n"
            elif ex.http10:
                head += b"Connection: keep-alive\r\n"
        if ex.set_cookie:
            head += ex.set_cookie
        head += b"\r\n"
        self.out.append(head)
        self.head_out = True

    def on_body(self, body: bytes) -> None:
        if self.chunked_out:
            self.out.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.status == 101 or self.done:
            return
        if self.chunked_out:
            self.out.append(b"0\r\n\r\n")
        self.done = True
