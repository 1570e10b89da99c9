"""HAProxy's certificates and ACME answers changed at run time, without a reload.

See haproxy_tls.py for what is rendered; this module drives the Runtime API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path

from conveyor.agent.routing.haproxy_runtime import cli
from conveyor.agent.routing.haproxy_state import AppState
from conveyor.agent.routing.haproxy_tls import crt_line, crt_list_path
from conveyor.agent.routing.spec import RouterError

__all__ = ["prune_certificates", "set_challenges", "swap_certificate"]


async def swap_certificate(
    admin: Path, certs: Path, old: AppState, new: AppState, pem: bytes
) -> None:
    """Serve the app's new certificate on its HTTPS port now, without a reload."""
    assert new.tls_port is not None and new.tls_cert and old.tls_cert
    fresh = certs / new.tls_cert
    stale = certs / old.tls_cert
    crt_list = crt_list_path(certs, new.bind, new.tls_port)
    await _ok(admin, f"new ssl cert {fresh}", "New empty certificate store")
    try:
        await _ok(admin, f"set ssl cert {fresh} <<\n{pem.decode().strip()}\n", "Transaction")
        await _ok(admin, f"commit ssl cert {fresh}", "Success!")
        await _ok(admin, f"add ssl crt-list {crt_list} <<\n{crt_line(fresh, new)}\n", "Success!")
    except RouterError:
        # nothing serves the new one yet: forget it, the old one keeps serving
        for undo in (
            f"abort ssl cert {fresh}",
            f"del ssl crt-list {crt_list} {fresh}",
            f"del ssl cert {fresh}",
        ):
            with contextlib.suppress(RouterError):
                await cli(admin, undo)
        raise
    await _ok(admin, f"del ssl crt-list {crt_list} {stale}", "deleted")
    await _ok(admin, f"del ssl cert {stale}", "deleted")


def prune_certificates(certs: Path, apps: Iterable[AppState]) -> None:
    """Remove the certificate files no app serves any more."""
    used = {a.tls_cert for a in apps if a.tls_cert}
    for path in certs.glob("*.pem"):
        if path.name not in used:
            path.unlink(missing_ok=True)


async def set_challenges(admin: Path, challenges: Path, answers: Mapping[str, str]) -> None:
    """Replace the ACME answers (prepare, fill, commit a new version of the map)."""
    answer = await cli(admin, f"prepare map {challenges}")
    version = answer.rsplit(":", 1)[-1].strip()
    if "New version created" not in answer or not version.isdigit():
        raise RouterError(f"HAProxy refused 'prepare map {challenges}': {answer.strip()}")
    for token, key in answers.items():
        await runtime_quiet(admin, f"add map @{version} {challenges} {token} {key}")
    await runtime_quiet(admin, f"commit map @{version} {challenges}")


async def runtime_quiet(admin: Path, command: str) -> None:
    answer = (await cli(admin, command)).strip()
    if answer:
        raise RouterError(f"HAProxy refused {command.split(' <<')[0]!r}: {answer}")


async def _ok(admin: Path, command: str, expect: str) -> None:
    answer = (await cli(admin, command)).strip()
    if expect.lower() not in answer.lower():
        raise RouterError(f"HAProxy refused {command.split(' <<')[0]!r}: {answer}")
