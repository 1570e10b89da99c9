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
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from conveyor.agent.certs import CertError, check_pair, renewal_due
from conveyor.protocol import TlsSpec

__all__ = ["AcmeCertificates"]

log = logging.getLogger("conveyor.agent")

# the longest an order may take, challenges and finalization included
ORDER_TIMEOUT = 90.0
# a failed renewal is tried again after this long (the certificate keeps serving)
RETRY_AFTER = 30.0

Publish = Callable[[dict[str, str]], None]


def obtain(
    directory: str,
    email: str | None,
    account_key: JWKRSA,
    domains: Sequence[str],
    key_pem: bytes,
    publish: Publish,
    verify: str | bool = True,
    timeout: float = ORDER_TIMEOUT,
) -> bytes:
    """One ACME order (blocking): the certificate chain for `domains` and `key_pem`.

    `publish` makes the router answer the HTTP-01 tokens (and, with {}, stop)."""
    net = client.ClientNetwork(account_key, user_agent="conveyor", verify_ssl=verify)  # type: ignore[arg-type]
    acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net=net)
    registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as exc:  # this key already has an account: use it
        net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
    order = acme.new_order(crypto_util.make_csr(key_pem, list(domains)))
    answers: dict[str, str] = {}
    todo: list[tuple[messages.ChallengeBody, challenges.ChallengeResponse]] = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue
        http01 = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
        if not http01:
            raise CertError(
                f"ACME at {directory} offers no HTTP-01 challenge for {authz.body.identifier.value}"
            )
        response, validation = http01[0].response_and_validation(account_key)
        answers[http01[0].chall.encode("token")] = validation
        todo.append((http01[0], response))
    publish(answers)
    try:
        for challenge, response in todo:
            acme.answer_challenge(challenge, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        done = acme.poll_and_finalize(order, deadline)
    finally:
        publish({})
    return str(done.fullchain_pem).encode()


def describe(exc: Exception, directory: str, domains: Sequence[str]) -> str:
    """What went wrong with an order, for the deployment and `conveyor status`."""
    names = ", ".join(domains)
    if isinstance(exc, errors.ValidationError):
        details = [
            f"{a.body.identifier.value}: {c.error.detail if c.error else c.status}"
            for a in exc.failed_authzrs
            for c in a.body.challenges
            if isinstance(c.chall, challenges.HTTP01)
        ]
        return (
            f"ACME at {directory} refused the certificate for {names}: HTTP-01 failed ("
            + "; ".join(details)
            + "); the CA must reach this host's shared HTTP port by these names"
        )
    if isinstance(exc, errors.TimeoutError | TimeoutError):
        return f"ACME at {directory}: no certificate for {names} in {ORDER_TIMEOUT:g} s"
    if isinstance(exc, messages.Error):
        return f"ACME at {directory} refused the order for {names}: {exc.detail or exc}"
    if isinstance(exc, CertError):
        return str(exc)
    return f"ACME at {directory} failed for {names}: {type(exc).__name__}: {exc}"


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
        account = await asyncio.to_thread(self._account_key, tls.acme_directory)
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

        def publish(answers: dict[str, str]) -> None:
            asyncio.run_coroutine_threadsafe(self.challenges(answers), loop).result(30)

        log.info("ACME order", extra={"app": app, "domains": list(domains)})
        try:
            chain = await asyncio.to_thread(
                obtain,
                tls.acme_directory,
                tls.acme_email,
                account,
                domains,
                key_pem,
                publish,
                self.verify,
            )
            check_pair(
                chain, key_pem, domains, dt.datetime.now(dt.UTC), cert_from="the ACME certificate"
            )
        except Exception as exc:
            message = describe(exc, tls.acme_directory, domains)
            self.errors[app] = message
            raise CertError(message) from None
        self.errors.pop(app, None)
        self._store(app, domains, tls, chain, key_pem)
        log.info("ACME certificate obtained", extra={"app": app, "domains": list(domains)})

    def _account_key(self, directory: str) -> JWKRSA:
        """This host's account key at a directory (made once, kept 0600)."""
        path = self.dir / f"account-{hashlib.sha256(directory.encode()).hexdigest()[:16]}.pem"
        try:
            loaded: Any = serialization.load_pem_private_key(path.read_bytes(), password=None)
            return JWKRSA(key=loaded)
        except FileNotFoundError:
            pass
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return JWKRSA(key=key)


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
