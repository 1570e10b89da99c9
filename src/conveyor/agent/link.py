"""The agent's line to the server: enrolment, long-polled desired state, reports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

import httpx

import conveyor
from conveyor.protocol import DesiredState, Enrolled, ObservedState
from conveyor.protocol.versions import AGENT_VERSION_HEADER, REFUSED_STATUS
from conveyor.tls import ServerTrust

log = logging.getLogger("conveyor.agent")
LONG_POLL_MAX = 25.0
REPORT_TIMEOUT = 8.0  # seconds; a host is offline after 15 s without a word


class EnrolmentError(Exception):
    """The agent has no credential and could not get one."""


class Revoked(Exception):
    """The server no longer accepts this agent's credential."""


class VersionRefused(Exception):
    """The server does not accept this agent's version (the message names both)."""


class ServerLink:
    """HTTP to the server with the agent's own credential (kept in <data>/credential.json).

    Every call, artifact downloads included (they go through `http`), trusts the server
    as `trust` says: its --ca, its --server-fingerprint, or the system's CAs.
    """

    def __init__(
        self, server: str | list[str], name: str, data: Path, trust: ServerTrust | None = None
    ) -> None:
        # several servers sharing one database: any of them will do, the first one first
        self.servers = server_urls([server] if isinstance(server, str) else server)
        self.server = self.servers[0]
        self._failed = 0  # servers tried in a row without an answer
        self.moved = asyncio.Event()  # set when the link moved to another server
        self.name = name
        self.credential_path = data / "credential.json"
        self.token: str | None = None
        self.trust = trust or ServerTrust()
        # a long-poll waits LONG_POLL_MAX at most: a read that takes much longer means the
        # link went away silently (a cut cable sends no FIN), so give up and poll again
        # every request names the agent's version: the server refuses one too old (426)
        self.http = httpx.AsyncClient(
            base_url=self.server,
            timeout=httpx.Timeout(10, read=LONG_POLL_MAX + 10),
            headers={AGENT_VERSION_HEADER: conveyor.__version__},
            verify=self.trust.context(),
        )

    def fail_over(self, failed: str | None = None) -> bool:
        """The server did not answer (`failed`: the URL that did not, if known): move to
        the next one. False once every server was tried since the last answer (then wait
        before the next round)."""
        if failed is not None and failed != self.server:
            return True  # the other loop moved already: go on with the new one
        self._failed += 1
        if len(self.servers) < 2:
            return False
        before = self.server
        self.moved.set()
        self.server = self.servers[(self.servers.index(before) + 1) % len(self.servers)]
        self.http.base_url = httpx.URL(self.server)
        log.warning("moving to another server", extra={"from": before, "to": self.server})
        if self._failed >= len(self.servers):
            self._failed = 0
            return False
        return True

    def answered(self) -> None:
        self._failed = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def ensure_credential(self, enrolment_token: str | None) -> None:
        if self.credential_path.exists():
            saved = json.loads(self.credential_path.read_text())
            same_server = saved.get("server") in self.servers
            # a new --server without --token: the same server moved (restored from a
            # backup on another address), which knows this credential
            if saved.get("name") == self.name and (same_server or not enrolment_token):
                self.token = saved["agent_token"]
                if not same_server:
                    self._save_credential()
                    log.info(
                        "credential re-pointed",
                        extra={"from": saved.get("server"), "to": self.server},
                    )
                return
        if not enrolment_token:
            raise EnrolmentError(
                f"no credential in {self.credential_path} and no --token: "
                "run `conveyor host add NAME` on the server side and pass its token"
            )
        try:
            r = await self.http.post(
                "/api/agent/enrol", json={"name": self.name, "token": enrolment_token}
            )
        except httpx.TransportError as exc:
            refused = self.trust.explain(exc)
            if refused:
                raise EnrolmentError(f"{self.server}: {refused}") from None
            raise EnrolmentError(f"cannot reach the server at {self.server}: {exc}") from None
        if r.status_code == REFUSED_STATUS:
            raise VersionRefused(_detail(r))
        if r.status_code != 200:
            raise EnrolmentError(_detail(r))
        self.token = Enrolled.model_validate(r.json()).agent_token
        self._save_credential()
        log.info("enrolled", extra={"host": self.name})

    def _save_credential(self) -> None:
        tmp = self.credential_path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"server": self.server, "name": self.name, "agent_token": self.token}, fh)
        os.replace(tmp, self.credential_path)

    async def desired(self, after: int, wait: float) -> DesiredState:
        r = await self.http.get(
            "/api/agent/desired", params={"after": after, "wait": wait}, headers=self.headers
        )
        self._check(r)
        return DesiredState.model_validate(r.json())

    async def desired_unless_moved(self, after: int, wait: float) -> DesiredState | None:
        """`desired`, given up (None) when the link moves to another server meanwhile: a
        long-poll to a server that froze would otherwise hang for its whole read timeout."""
        self.moved.clear()
        poll = asyncio.create_task(self.desired(after, wait))
        moved = asyncio.create_task(self.moved.wait())
        try:
            await asyncio.wait({poll, moved}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
        if poll.done():
            return poll.result()
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await poll
        return None

    async def report(self, observed: ObservedState) -> None:
        r = await self.http.post(
            "/api/agent/report",
            content=observed.model_dump_json(),
            headers={**self.headers, "Content-Type": "application/json"},
            # short: a report that hangs (a frozen server) moves the agent to another
            timeout=REPORT_TIMEOUT,
        )
        self._check(r)

    def artifact_url(self, path: str) -> str:
        return self.server + path

    def _check(self, r: httpx.Response) -> None:
        if r.status_code == REFUSED_STATUS:
            raise VersionRefused(_detail(r))
        if r.status_code in (401, 403):
            raise Revoked(_detail(r))
        r.raise_for_status()

    async def close(self) -> None:
        await self.http.aclose()


def server_urls(given: list[str]) -> list[str]:
    """`--server` values (repeated, or comma-separated) as a list of URLs, each once."""
    urls: list[str] = []
    for value in given:
        for url in value.split(","):
            url = url.strip().rstrip("/")
            if url and url not in urls:
                urls.append(url)
    if not urls:
        raise EnrolmentError("--server: give the URL of at least one server")
    return urls


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return r.text or r.reason_phrase
