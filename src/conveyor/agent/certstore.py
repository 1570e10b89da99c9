"""The certificates this host serves: read, checked, and written where the router loads them.

For each app with `tls:` the agent makes one file, `<data>/tls/<app>/<digest>.pem` (the
certificate chain then the key, mode 0600), from the files on the host, the secrets in
its desired state, or the ACME cache (`acme.py`). The file's name is its content's
digest, so a new certificate is a new route spec and the router loads it without a
restart; a certificate that fails its checks (certs.py) never gets that far, and the
previous one keeps serving.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from conveyor.certs import CertError, CertInfo, check_pair, served_pem
from conveyor.protocol import TlsSpec
from conveyor.routespec import RouteSpec, TlsRoute

__all__ = ["CertError", "CertStore"]

# served files kept per app besides the newest (a router may still hold an older one)
KEEP_SERVED = 3


class CertStore:
    """Turns an app's `TlsSpec` into the `TlsRoute` its router serves."""

    def __init__(
        self,
        data: Path,
        https_port: int,
        acme_pair: Callable[[str, Sequence[str], TlsSpec], tuple[bytes, bytes] | None]
        | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dir = data / "tls"
        self.https_port = https_port
        # ACME's current certificate and key for an app's domains (None: none yet)
        self.acme_pair = acme_pair
        self.now = now
        self._checked: dict[bytes, tuple[Path, CertInfo]] = {}

    def route(self, app: str, domains: Sequence[str], tls: TlsSpec) -> TlsRoute:
        """The app's certificate as the router gets it, or CertError saying what is wrong."""
        cert, key, cert_from, key_from = self._pair(app, domains, tls)
        digest = hashlib.sha256(b"\0".join([cert, key, *(d.encode() for d in domains)])).digest()
        found = self._checked.get(digest)
        now = self.now()
        if found is None or now >= found[1].not_after:
            info = check_pair(cert, key, domains, now, cert_from=cert_from, key_from=key_from)
            path = self._write(app, served_pem(cert, key))
            found = self._checked[digest] = (path, info)
        if not found[0].exists():
            self._write(app, served_pem(cert, key))
        return TlsRoute(port=self.https_port, pem=str(found[0]), redirect_http=tls.redirect_http)

    def with_tls(
        self, spec: RouteSpec, tls: TlsSpec | None, served: RouteSpec | None
    ) -> tuple[RouteSpec | None, str | None]:
        """The spec with the app's certificate; one that fails its checks leaves the
        certificate already `served` in place (the weights still move: a rollback is never
        held by a certificate), and says why. None: no certificate to serve at all."""
        if tls is None or not spec.domains:
            return spec, None
        try:
            route = self.route(spec.app, spec.domains, tls)
        except CertError as exc:
            error = f"TLS: {exc}; the previous certificate is kept"
            if served is None or served.tls is None:
                return None, error
            kept = served.tls.model_copy(update={"redirect_http": tls.redirect_http})
            return spec.model_copy(update={"tls": kept}), error
        return spec.model_copy(update={"tls": route}), None

    def info(self, pem: str) -> CertInfo | None:
        """What was checked of a served file (None: not made by this agent process)."""
        return next((i for p, i in self._checked.values() if str(p) == pem), None)

    def _pair(
        self, app: str, domains: Sequence[str], tls: TlsSpec
    ) -> tuple[bytes, bytes, str, str]:
        if tls.cert_file and tls.key_file:
            return (
                _read(tls.cert_file, "tls.cert"),
                _read(tls.key_file, "tls.key"),
                f"tls.cert {tls.cert_file}",
                f"tls.key {tls.key_file}",
            )
        if tls.cert_pem is not None and tls.key_pem is not None:
            return (
                tls.cert_pem.encode(),
                tls.key_pem.encode(),
                "the certificate of tls.cert_secret",
                "the key of tls.key_secret",
            )
        if tls.acme_directory:
            pair = self.acme_pair(app, domains, tls) if self.acme_pair else None
            if pair is None:
                raise CertError(
                    f"no certificate from ACME ({tls.acme_directory}) yet for {', '.join(domains)}"
                )
            return (*pair, "the ACME certificate", "its key")
        raise CertError("tls names no certificate (expected files, secrets or acme)")

    def _write(self, app: str, pem: bytes) -> Path:
        folder = self.dir / app
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{hashlib.sha256(pem).hexdigest()[:24]}.pem"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                os.replace(tmp, path)  # mkstemp made it 0600
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _prune(folder, keep=path)
        return path


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertError(
            f"{key} {path}: cannot read it ({exc.strerror or exc}); expected a PEM file the "
            "agent's user can read on this host"
        ) from None


def _prune(folder: Path, keep: Path) -> None:
    """Drop all but the newest few served files of an app."""
    files = sorted(
        (p for p in folder.glob("*.pem") if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in files[KEEP_SERVED:]:
        old.unlink(missing_ok=True)
