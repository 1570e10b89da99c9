"""Certificates over ACME for `tls: acme` (issue 14 point 2): obtained, cached, renewed.

The protocol is certbot's `acme` package; this module only drives it. HTTP-01: the
agent asks its router to answer the challenge tokens on the host's shared HTTP port
(for any name, before the app is routed), then lets the CA validate and finalizes the
order. Certificates are cached on the host, `<data>/tls/acme/<app>/` (key and chain,
mode 0600, with the domains and directory they were obtained for), so a restarted
agent serves them at once; one is renewed once less than a third of its lifetime is
left (`certs.renewal_due`), in the background, the old one serving until the new one
is in place (certstore.py hands it to the router, which swaps it at run time).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from conveyor.acmeorder import account_key, order_pair, write_private
from conveyor.certs import CertError, check_pair, renewal_due
from conveyor.protocol import TlsSpec

__all__ = ["AcmeCertificates"]

log = logging.getLogger("conveyor.agent")

# a failed renewal is tried again after this long (the certificate keeps serving)
RETRY_AFTER = 30.0


class AcmeCertificates:
    """The ACME certificates of this host's apps: the cache, orders, renewals."""

    def __init__(
        self,
        data: Path,
        challenges: Callable[[dict[str, str]], Coroutine[Any, Any, None]],
        verify: str | bool = True,
    ) -> None:
        self.dir = data / "tls" / "acme"
        # the router's answers on the shared HTTP port (Router.challenges at bind, port)
        self.challenges = challenges
        self.verify = verify
        self._lock = asyncio.Lock()
        self._renewing: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    # -- the cache -----------------------------------------------------------

    def pair(self, app: str, domains: Sequence[str], tls: TlsSpec) -> tuple[bytes, bytes] | None:
        """The cached certificate and key for exactly these domains and directory."""
        folder = self.dir / app
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta != {"domains": sorted(domains), "directory": tls.acme_directory}:
                return None
            return (folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()
        except (OSError, ValueError):
            return None

    def due(self, app: str, domains: Sequence[str], tls: TlsSpec) -> bool:
        """No usable cached certificate, or one to renew."""
        pair = self.pair(app, domains, tls)
        if pair is None:
            return True
        now = dt.datetime.now(dt.UTC)
        try:
            return renewal_due(check_pair(*pair, domains, now), now)
        except CertError:
            return True

    def _store(
        self, app: str, domains: Sequence[str], tls: TlsSpec, cert: bytes, key: bytes
    ) -> None:
        folder = self.dir / app
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # key and certificate first, the meta that makes them count last
        _write(folder / "key.pem", key)
        _write(folder / "cert.pem", cert)
        meta = {"domains": sorted(domains), "directory": tls.acme_directory}
        _write(folder / "meta.json", json.dumps(meta).encode())

    # -- orders ----------------------------------------------------------------

    async def ensure(self, app: str, domains: Sequence[str], tls: TlsSpec) -> None:
        """A valid certificate for the app's domains in the cache (an order if needed), or
        CertError saying what the CA said."""
        if not self.due(app, domains, tls):
            return
        async with self._lock:  # one order at a time: the router has one set of answers
            if self.due(app, domains, tls):
                await self._order(app, domains, tls)

    def keep_fresh(self, app: str, domains: Sequence[str], tls: TlsSpec) -> None:
        """Renew in the background when due (the current certificate keeps serving)."""
        running = self._renewing.get(app)
        if running is not None and not running.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._failed_at.get(app, -RETRY_AFTER) < RETRY_AFTER:
            return
        if not self.due(app, domains, tls):
            return
        self._renewing[app] = loop.create_task(self._renew(app, list(domains), tls))

    async def _renew(self, app: str, domains: list[str], tls: TlsSpec) -> None:
        try:
            await self.ensure(app, domains, tls)
            log.info("ACME certificate renewed", extra={"app": app, "domains": domains})
        except CertError as exc:
            self._failed_at[app] = asyncio.get_running_loop().time()
            log.error("ACME renewal failed", extra={"app": app, "error": str(exc)})

    async def _order(self, app: str, domains: Sequence[str], tls: TlsSpec) -> None:
        assert tls.acme_directory is not None
        loop = asyncio.get_running_loop()
        account = await asyncio.to_thread(account_key, self.dir, tls.acme_directory)

        def publish(answers: dict[str, str]) -> None:
            asyncio.run_coroutine_threadsafe(self.challenges(answers), loop).result(30)

        log.info("ACME order", extra={"app": app, "domains": list(domains)})
        try:
            chain, key_pem = await asyncio.to_thread(
                order_pair,
                tls.acme_directory,
                tls.acme_email,
                account,
                domains,
                publish,
                self.verify,
            )
        except CertError as exc:
            self.errors[app] = str(exc)
            raise
        self.errors.pop(app, None)
        self._store(app, domains, tls, chain, key_pem)
        log.info("ACME certificate obtained", extra={"app": app, "domains": list(domains)})


_write = write_private
