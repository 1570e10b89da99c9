"""HAProxy's certificates and ACME answers changed at run time, without a reload.

See haproxy_tls.py for what is rendered; this module drives the Runtime API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from conveyor.agent.routing.haproxy_config import write_atomic
from conveyor.agent.routing.haproxy_runtime import cli
from conveyor.agent.routing.haproxy_state import AppState
from conveyor.agent.routing.haproxy_tls import cert_file
from conveyor.agent.routing.spec import RouterError, RouteSpec

__all__ = [
    "certificate_file",
    "prune_certificates",
    "read_certificate",
    "set_challenges",
    "swap_certificate",
    "tls_moved",
]


def read_certificate(spec: RouteSpec) -> bytes | None:
    """The bytes of the spec's certificate file (None: no tls)."""
    if spec.tls is None:
        return None
    try:
        return Path(spec.tls.pem).read_bytes()
    except OSError as exc:
        raise RouterError(
            f"app {spec.app}: cannot read the certificate {spec.tls.pem}: {exc.strerror or exc}"
        ) from exc


def tls_moved(old: AppState, new: AppState) -> bool:
    """Joining or leaving the HTTPS port, or redirecting or not: a reload (not a swap)."""
    before = (old.tls_port, old.redirect_http, bool(old.tls_cert))
    return before != (new.tls_port, new.redirect_http, bool(new.tls_cert))


@contextlib.contextmanager
def certificate_file(cert: Path, pem: bytes | None) -> Iterator[None]:
    """HAProxy's copy of the certificate for a reload; put back if the reload fails (the
    running HAProxy still has the previous one)."""
    before = cert.read_bytes() if cert.exists() else None
    if pem is not None:
        write_atomic(cert, pem.decode(errors="replace"))
    try:
        yield
    except RouterError:
        if before is not None:
            write_atomic(cert, before.decode(errors="replace"))
        raise


async def swap_certificate(admin: Path, cert: Path, pem: bytes) -> None:
    """Serve an app's new certificate now, without a reload: its one file (named in the
    crt-list, maybe the frontend's default certificate) gets the new PEM in a transaction."""
    await _ok(admin, f"set ssl cert {cert} <<\n{pem.decode().strip()}\n", "Transaction")
    try:
        await _ok(admin, f"commit ssl cert {cert}", "Success!")
    except RouterError:
        with contextlib.suppress(RouterError):
            await cli(admin, f"abort ssl cert {cert}")
        raise


def prune_certificates(certs: Path, apps: Iterable[AppState]) -> None:
    """Remove the certificate files no app serves any more."""
    used = {cert_file(certs, a.app).name for a in apps if a.tls_cert}
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
    refused = any(word in answer.lower() for word in ("can't", "cannot", "error", "unable"))
    if refused or expect.lower() not in answer.lower():
        raise RouterError(f"HAProxy refused {command.split(' <<')[0]!r}: {answer}")
