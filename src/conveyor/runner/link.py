"""A runner's HTTP link to its server(s): a bearer token, and the next server when one
does not answer (several servers sharing one database)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx

log = logging.getLogger("conveyor.runner")

RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between tries while no server answers
UNAVAILABLE = (502, 503, 504)  # a server restarting, or behind a proxy that lost it: the next


class Unreachable(Exception):
    """No server answered for a while."""


class Link:
    """Requests to the first server that answers, moving on to the next on a transport
    error; `give_up` seconds without any answer raise Unreachable."""

    def __init__(
        self,
        servers: Sequence[str],
        token: str,
        *,
        verify: Any = True,
        give_up: float = 60.0,
        bind: str | None = None,
    ) -> None:
        """`bind`: the local address to connect from (a machine with several)."""
        self.servers = [s.rstrip("/") for s in servers]
        self.current = 0
        self.give_up = give_up
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0),
            transport=httpx.AsyncHTTPTransport(verify=verify, local_address=bind),
            trust_env=False,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up
        pause = RETRY_FIRST
        while True:
            url = self.servers[self.current] + path
            try:
                response = await self.http.request(method, url, **kw)
                if response.status_code not in UNAVAILABLE:
                    return response
                raise httpx.TransportError(f"{response.status_code} from {url}")
            except httpx.TransportError as exc:
                log.warning(
                    "server did not answer", extra={"url": url, "error": str(exc) or repr(exc)}
                )
                self.current = (self.current + 1) % len(self.servers)
                if loop.time() >= deadline:
                    raise Unreachable(
                        f"no server answered for {self.give_up:g} s "
                        f"({', '.join(self.servers)}): last error {exc!r}"
                    ) from exc
                if self.current == 0:  # every server tried once: wait before the next round
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MAX)

    async def stream_to(self, path: str, headers: dict[str, str], out: Any) -> httpx.Response:
        """GET `path` into the open binary file `out` (from the start on a retry)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up
        while True:
            url = self.servers[self.current] + path
            try:
                async with self.http.stream("GET", url, headers=headers) as response:
                    if response.status_code == 200:
                        out.seek(0)
                        out.truncate()
                        async for chunk in response.aiter_bytes():
                            out.write(chunk)
                    else:
                        await response.aread()
                    return response
            except httpx.TransportError as exc:
                self.current = (self.current + 1) % len(self.servers)
                if loop.time() >= deadline:
                    raise Unreachable(f"no server answered for {self.give_up:g} s") from exc
                await asyncio.sleep(RETRY_FIRST)
