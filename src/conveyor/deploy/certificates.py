"""`tls: acme` ordered once per app and environment, by the server (issue 14, open point 1).

Each host ordering its own certificate for a name served by several hosts spends the
CA's rate limits once per host, and its HTTP-01 challenge fails whenever the name
resolves to another host. So the server orders: when a deployment needs a certificate
(none yet for these domains, or one due for renewal) it puts the challenge answers in
the desired state of every host of the environment (`DesiredState.challenges`), waits
until their agents report that their routers answer them (`ObservedState.challenges`),
lets the CA validate whichever host the name resolves to, and keeps the certificate and
its key in the secret store, sealed, under a name users cannot set (`conveyor.acme`, one
per environment). Hosts get them as they get a certificate from secrets
(`TlsSpec.cert_pem`), and swap them at run time. A background task renews each one once
a third of its lifetime is left (`certs.renewal_due`; each server a little later, drawn
at its start, so that servers sharing a database seldom renew together), the same way,
and wakes the environment's hosts.

The ACME account key is the server's, `<data>/acme/account-<digest>.pem` (0600). The
CA's API is trusted with the system's CAs, or the file in CONVEYOR_ACME_CA (a test CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.acmeorder import account_key, order_pair
from conveyor.certs import CertError, check_pair, renewal_due
from conveyor.protocol import ObservedState
from conveyor.store import changes
from conveyor.store.models import App, Host, HostApp, Secret
from conveyor.store.outage import OUTAGE
from conveyor.store.secrets import delete_secret, sealer_of, secret_values, set_secret
from conveyor.threads import in_thread

__all__ = [
    "ACME_CA_ENV",
    "CERT_SECRET",
    "CHALLENGE_SECRET",
    "Certificates",
    "Stored",
    "challenges_for",
    "stored_for",
]

log = logging.getLogger("conveyor.deploy")

ACME_CA_ENV = "CONVEYOR_ACME_CA"
# secret names users cannot set (the API takes [A-Z_][A-Z0-9_]*): one environment's
# certificate and key, and the answers of its order under way
CERT_SECRET = "conveyor.acme"
CHALLENGE_SECRET = "conveyor.acme-challenges"
# how long an order waits for every host to answer its tokens before asking the CA anyway
ANSWER_WAIT = 30.0
# renewals: looked at least this often, at most this often; a failed one retried after
# RETRY_AFTER seconds, doubled with each failure in a row up to RETRY_MAX (see retry_in)
CHECK_AT_LEAST = 300.0
CHECK_AT_MOST = 1.0
RETRY_AFTER = 30.0
RETRY_MAX = 3600.0


class Stored(NamedTuple):
    """One environment's certificate as the secret store keeps it."""

    domains: list[str]
    directory: str
    email: str | None
    cert: str
    key: str
    error: str | None = None  # why its last renewal failed (it keeps serving meanwhile)

    def fits(self, domains: Sequence[str], directory: str) -> bool:
        return self.domains == sorted(domains) and self.directory == directory


def parse_stored(value: str) -> Stored | None:
    try:
        raw = json.loads(value)
        return Stored(
            domains=list(raw["domains"]),
            directory=str(raw["directory"]),
            email=raw.get("email"),
            cert=str(raw["cert"]),
            key=str(raw["key"]),
            error=raw.get("error"),
        )
    except (ValueError, KeyError, TypeError):
        return None


def stored_for(secrets: Mapping[str, str], domains: Sequence[str], directory: str) -> Stored | None:
    """The environment's ACME certificate for exactly these domains and directory (from
    `secret_values` of the environment), None when the server holds none."""
    found = parse_stored(secrets.get(CERT_SECRET, ""))
    if found is None or not found.fits(domains, directory):
        return None
    return found


def due_in(
    stored: Stored | None, domains: Sequence[str], now: dt.datetime, later: float = 0.0
) -> float:
    """Seconds until this certificate should be renewed (0: order now: none, unfit, or due).

    `later` (0 to 0.1) moves the renewal that share of the renewal window closer to the
    expiry: each server draws its own, so servers sharing a database seldom renew the same
    certificate at the same moment (the later one then finds it renewed)."""
    if stored is None:
        return 0.0
    try:
        info = check_pair(stored.cert.encode(), stored.key.encode(), domains, now)
    except CertError:
        return 0.0
    if renewal_due(info, now):
        return 0.0
    left = (info.not_after - now).total_seconds() - info.lifetime() / 3 * (1 - later)
    return max(left, 0.0)


def retry_in(failures: int, lifetime: float | None) -> float:
    """Seconds before a renewal that failed `failures` times in a row is tried again.

    30 s doubled with each failure, at most an hour (a CA limits failed validations per
    name and hour: Let's Encrypt allows 5), and at most a thirtieth of the certificate's
    lifetime (`lifetime` seconds, None when unknown), so that a short-lived certificate
    gets several tries before it expires: a 90-day one is never held back by that."""
    wait = min(RETRY_AFTER * 2.0 ** min(max(failures, 1) - 1, 16), RETRY_MAX)
    if lifetime is not None:
        wait = min(wait, lifetime / 30)
    return max(wait, CHECK_AT_MOST)


def lifetime_of(stored: Stored) -> float | None:
    """The stored certificate's lifetime in seconds, None when it cannot be read."""
    try:
        chain = x509.load_pem_x509_certificates(stored.cert.encode())
    except ValueError:
        return None
    leaf = chain[0]
    return (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()


# the answers per host, made once per commit of the secret store in this process (and
# for a second at most: another server's orders are seen that late)
_answers_cache: tuple[int, float, dict[str, dict[str, str]]] | None = None


def challenges_for(session: Session, host: str) -> dict[str, str]:
    """The HTTP-01 answers the server's orders under way want this host to serve."""
    global _answers_cache
    generation = changes.generation("secrets")
    now = time.monotonic()
    cached = _answers_cache
    if cached is None or cached[0] != generation or now - cached[1] > 1.0:
        per_host: dict[str, dict[str, str]] = {}
        rows = session.scalars(select(Secret).where(Secret.name == CHALLENGE_SECRET)).all()
        for row in rows:
            try:
                order = json.loads(sealer_of(session).open(row.value))
            except ValueError:
                continue
            for name in order.get("hosts", []):
                per_host.setdefault(name, {}).update(order.get("answers", {}))
        cached = _answers_cache = (generation, now, per_host)
    return dict(cached[2].get(host, {}))


class Certificates:
    """The server's ACME orders and renewals, one per app and environment."""

    def __init__(self, sessions: sessionmaker[Session], data_dir: Path, notifier: Wakes) -> None:
        self.sessions = sessions
        self.dir = data_dir / "acme"
        self.notifier = notifier
        self.verify: str | bool = os.environ.get(ACME_CA_ENV) or True
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        # failed renewals: when the last one failed, and how many failed in a row
        self._failed_at: dict[tuple[int, str], tuple[float, int]] = {}
        self._stopping = False
        self._wake = asyncio.Event()
        self._later = random.uniform(0.0, 0.1)  # this server's renewals: due_in(later=)

    # -- a deployment's certificate -------------------------------------------

    def needs_order(
        self, app_id: int, environment: str, domains: Sequence[str], directory: str
    ) -> bool:
        """No fit certificate for these domains in the store, or one due for renewal."""
        with self.sessions() as session:
            app = session.get_one(App, app_id)
            found = parse_stored(secret_values(session, app, environment).get(CERT_SECRET, ""))
        if found is None or not found.fits(domains, directory):
            return True
        return due_in(found, domains, dt.datetime.now(dt.UTC)) == 0.0

    async def ensure(
        self,
        app_id: int,
        environment: str,
        domains: Sequence[str],
        directory: str,
        email: str | None,
        hosts: Collection[str],
    ) -> None:
        """A fit certificate in the store for the environment (ordered if needed, its
        challenges answered by `hosts`), or CertError saying what the CA said."""
        key = (app_id, environment)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one order per app and environment at a time
            if not await in_thread(self.needs_order, app_id, environment, domains, directory):
                return
            # the deployment's hosts and those serving the app there now: whichever the
            # name resolves to answers
            serving = await in_thread(self._serving, app_id, environment)
            answering = sorted({*hosts, *serving})
            await self._order(app_id, environment, domains, directory, email, answering)
        self._wake.set()  # the renewal task's next look is at its renewal time

    async def _order(
        self,
        app_id: int,
        environment: str,
        domains: Sequence[str],
        directory: str,
        email: str | None,
        hosts: Collection[str],
    ) -> None:
        loop = asyncio.get_running_loop()
        account = await asyncio.to_thread(account_key, self.dir, directory)

        def publish(answers: dict[str, str]) -> None:
            call = self._publish(app_id, environment, hosts, answers)
            asyncio.run_coroutine_threadsafe(call, loop).result(ANSWER_WAIT + 30)

        log.info("ACME order", extra={"environment": environment, "domains": list(domains)})
        chain, key_pem = await asyncio.to_thread(
            order_pair, directory, email, account, domains, publish, self.verify
        )
        stored = Stored(sorted(domains), directory, email, chain.decode(), key_pem.decode())
        await in_thread(self._store, app_id, environment, stored)
        log.info("ACME certificate stored", extra={"environment": environment})

    def _serving(self, app_id: int, environment: str) -> list[str]:
        with self.sessions() as session:
            return _serving(session, app_id, environment)

    def _store(self, app_id: int, environment: str, stored: Stored) -> None:
        with self.sessions() as session:
            app = session.get_one(App, app_id)
            set_secret(
                session, app, CERT_SECRET, environment, json.dumps(stored._asdict()), "value"
            )
            woken = _bump(session, _serving(session, app_id, environment))
            session.commit()
        self.notifier.changed_many(woken)

    async def _publish(
        self, app_id: int, environment: str, hosts: Collection[str], answers: dict[str, str]
    ) -> None:
        """Put the answers in the hosts' desired state (or take them out, with {}) and wait
        until every host reports them answered (for ANSWER_WAIT seconds at most)."""

        def write() -> list[str]:
            with self.sessions() as session:
                app = session.get_one(App, app_id)
                if answers:
                    order = {"hosts": sorted(hosts), "answers": answers}
                    set_secret(
                        session, app, CHALLENGE_SECRET, environment, json.dumps(order), "value"
                    )
                else:
                    delete_secret(session, app, CHALLENGE_SECRET, environment)
                woken = _bump(session, hosts)
                session.commit()
            return woken

        woken = await in_thread(write)
        self.notifier.changed_many(woken)
        if not answers:
            return
        deadline = time.monotonic() + ANSWER_WAIT
        waiting = set(woken)
        while waiting and time.monotonic() < deadline:
            waiting -= await in_thread(self._answering, waiting, set(answers))
            if waiting:
                await asyncio.sleep(0.2)
        if waiting:
            log.warning(
                "ACME answers not confirmed by every host; asking the CA anyway",
                extra={"environment": environment, "hosts": sorted(waiting)},
            )

    def _answering(self, hosts: Collection[str], tokens: set[str]) -> set[str]:
        with self.sessions() as session:
            rows = session.scalars(select(Host).where(Host.name.in_(list(hosts)))).all()
            done = set()
            for host in rows:
                if host.observed is None:
                    continue
                try:
                    observed = ObservedState.model_validate_json(host.observed)
                except ValueError:
                    continue
                if tokens <= set(observed.challenges):
                    done.add(host.name)
            return done

    # -- renewals -------------------------------------------------------------

    async def serve(self) -> None:
        """Renew every stored certificate when due, until stopped."""
        while not self._stopping:
            wait = CHECK_AT_LEAST
            self._wake.clear()  # before the look: an order stored meanwhile wakes the next
            try:
                wait = await self._renew_due()
            except Exception as exc:
                if OUTAGE.turn_failed(exc, "ACME renewals") is None:
                    log.exception("ACME renewal check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(CHECK_AT_MOST, wait))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _renew_due(self) -> float:
        """Renew what is due; the seconds until the next one is."""
        now = dt.datetime.now(dt.UTC)
        wait = CHECK_AT_LEAST
        for app_id, environment, stored, hosts in await in_thread(self._stored):
            key = (app_id, environment)
            left = due_in(stored, stored.domains, now, self._later)
            failed_at, failures = self._failed_at.get(key, (0.0, 0))
            if left > 0 or not hosts:
                wait = min(wait, left or CHECK_AT_LEAST)
                continue
            lifetime = lifetime_of(stored)
            retry = retry_in(failures, lifetime)
            if failures and time.monotonic() - failed_at < retry:
                wait = min(wait, retry - (time.monotonic() - failed_at))
                continue
            try:
                await self.ensure(
                    app_id, environment, stored.domains, stored.directory, stored.email, hosts
                )
                self._failed_at.pop(key, None)
                wait = CHECK_AT_MOST  # the next look reads the new one's renewal time
                log.info("ACME certificate renewed", extra={"environment": environment})
            except CertError as exc:
                self._failed_at[key] = (time.monotonic(), failures + 1)
                wait = min(wait, retry_in(failures + 1, lifetime))
                # the hosts show it (conveyor status) while the certificate keeps serving
                await in_thread(self._store, app_id, environment, stored._replace(error=str(exc)))
                log.error(
                    "ACME renewal failed; the current certificate keeps serving",
                    extra={"environment": environment, "error": str(exc)},
                )
        return wait

    def _stored(self) -> list[tuple[int, str, Stored, list[str]]]:
        """Every environment's stored certificate, with the hosts serving it."""
        found = []
        with self.sessions() as session:
            rows = session.scalars(select(Secret).where(Secret.name == CERT_SECRET)).all()
            for row in rows:
                stored = parse_stored(sealer_of(session).open(row.value))
                if stored is not None:
                    hosts = _serving(session, row.app_id, row.environment)
                    found.append((row.app_id, row.environment, stored, hosts))
        return found


class Wakes(Protocol):
    """What wakes the agents' long-polls (deploy.desired.Notifier)."""

    def changed_many(self, hosts: Collection[str]) -> None: ...


def _serving(session: Session, app_id: int, environment: str) -> list[str]:
    """The hosts whose desired state has the app in this environment."""
    return list(
        session.scalars(
            select(Host.name)
            .join(HostApp, HostApp.host_id == Host.id)
            .where(HostApp.app_id == app_id, HostApp.environment == environment)
        )
    )


def _bump(session: Session, hosts: Collection[str]) -> list[str]:
    """A new desired generation for these hosts (their agents then fetch it)."""
    rows = session.scalars(select(Host).where(Host.name.in_(list(hosts)))).all()
    for host in rows:
        host.generation += 1
    return [h.name for h in rows]
