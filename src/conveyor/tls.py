"""TLS for conveyor's processes: the contexts their httpx clients share, and the server's
certificate.

httpx builds a context for each client it makes and loads the CA bundle into it: about
25 ms of CPU each time. Code that makes clients often (health checks while instances
start, a judged step reading Prometheus every second, verify checks) passes one made once.

Two kinds of peers, two contexts: `client_tls()` trusts the system's CAs, for the apps'
own URLs and Prometheus; `ServerTrust.context()` is what an agent or the CLI trusts as
its conveyor server: the CA of `--ca FILE`, the certificate pinned by
`--server-fingerprint sha256:…`, or else the system's CAs. One context per trust and
process: the agent's long-poll, its reports and its artifact downloads share it.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import httpx

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s+.*?-----END CERTIFICATE-----", re.DOTALL)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, _EMAIL_MISMATCH, _IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 63, 64)


class TrustError(ValueError):
    """A certificate, key, CA file or fingerprint that conveyor cannot use (bad input)."""


@cache
def client_tls() -> ssl.SSLContext:
    """httpx's default context (CA bundle, SSL_CERT_FILE / SSL_CERT_DIR), made once."""
    return httpx.create_ssl_context()


# -- fingerprints -------------------------------------------------------------------------


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 as conveyor prints and pins it: `sha256:<64 hex digits>`."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """`sha256:AB:CD:…` (as openssl prints it), `sha256:abcd…` or bare hex → `sha256:<hex>`."""
    value = text.strip().lower()
    value = value.removeprefix("sha256:").removeprefix("sha256=").replace(":", "")
    if not _HEX64.match(value):
        raise TrustError(
            f"--server-fingerprint {text!r}: expected sha256: and 64 hex digits, as "
            "`conveyor server` prints it at start (or `openssl x509 -noout -fingerprint "
            "-sha256 -in CERT`)"
        )
    return "sha256:" + value


def first_certificate(pem: bytes, where: str) -> bytes:
    """The DER of the first certificate of a PEM file (the server's own, before its chain)."""
    found = _PEM_CERT.search(pem)
    if found is None:
        raise TrustError(f"{where}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)")
    try:
        return ssl.PEM_cert_to_DER_cert(found.group(0).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise TrustError(f"{where}: its first certificate is not valid PEM") from None


# -- the server's side --------------------------------------------------------------------


def _encrypted_key() -> bytes:
    raise TrustError("the key is encrypted")


def check_server_certificate(cert: Path, key: Path) -> str:
    """Check that `--tls-cert`/`--tls-key` can serve TLS; returns the certificate's
    fingerprint. Raises TrustError saying which file is wrong, and how."""
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TrustError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
        if option == "--tls-cert":
            der = first_certificate(data, f"{option} {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # a password callback that fails: OpenSSL would otherwise prompt on the terminal
        context.load_cert_chain(cert, key, password=_encrypted_key)
    except TrustError:
        raise TrustError(
            f"--tls-key {key}: the key is encrypted; give the server an unencrypted key "
            "readable only by its user (`openssl pkey -in KEY -out KEY.plain`)"
        ) from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TrustError(
                f"--tls-key {key} does not match the certificate in --tls-cert {cert}: "
                "give the key the certificate was made for"
            ) from None
        raise TrustError(
            f"--tls-key {key}: not a PEM private key for the certificate in --tls-cert {cert} "
            f"({exc.reason or exc})"
        ) from None
    return fingerprint(der)


# -- the clients' side: whom they trust as their conveyor server --------------------------


class PinMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Pinned:
    """After each handshake, compare the peer's certificate with the pin (before a byte of
    HTTP, the bearer token included, is sent)."""

    pin: ClassVar[str]

    def _check_pin(self, der: bytes | None) -> None:
        got = fingerprint(der) if der else "no certificate"
        if got != self.pin:
            raise PinMismatch(
                f"the server's certificate is {got}, not {self.pin} "
                "(--server-fingerprint): refusing to talk to it"
            )


class _PinnedObject(ssl.SSLObject, _Pinned):
    def do_handshake(self) -> None:
        super().do_handshake()
        self._check_pin(self.getpeercert(binary_form=True))


class _PinnedSocket(ssl.SSLSocket, _Pinned):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        self._check_pin(self.getpeercert(binary_form=True))


@dataclass(frozen=True)
class ServerTrust:
    """Whom a process trusts as its conveyor server."""

    ca: Path | None = None
    fingerprint: str | None = None  # sha256:<hex>

    @classmethod
    def of(
        cls, ca: str | os.PathLike[str] | None, server_fingerprint: str | None = None
    ) -> ServerTrust:
        """From `--ca` and `--server-fingerprint` (either may be empty); checks both now."""
        trust = cls(
            Path(ca).expanduser().resolve() if ca else None,
            parse_fingerprint(server_fingerprint) if server_fingerprint else None,
        )
        trust.context()  # a CA file that cannot be read fails here, at start
        return trust

    @property
    def private(self) -> bool:
        """A CA or pin of its own, so an http:// server URL would make it pointless."""
        return self.ca is not None or self.fingerprint is not None

    def check_url(self, url: str) -> None:
        """Refuse --ca / --server-fingerprint with a plain http:// server: it would not
        protect anything, and the operator believes it does."""
        if self.private and not url.lower().startswith("https://"):
            given = "--ca" if self.ca else "--server-fingerprint"
            raise TrustError(
                f"{given} is given but the server URL {url} is not https://: "
                "use the server's https:// URL"
            )

    def context(self) -> ssl.SSLContext:
        """The one context of this trust in this process."""
        return _context(self)

    def explain(self, exc: BaseException) -> str | None:
        """What a failed connection says about trust, if it failed on TLS: which certificate
        was refused and why, and what to do."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, PinMismatch):
                return str(seen)
            if isinstance(seen, ssl.SSLCertVerificationError):
                why = seen.verify_message or seen.reason or str(seen)
                if seen.verify_code in _NAME_MISMATCH:
                    return (
                        f"the server's certificate is not made for the host name of the "
                        f"server URL: {why} Use the name the certificate was made for, or "
                        "make it with this name among its subject alternative names"
                    )
                if self.ca:
                    return (
                        f"the server's certificate is not trusted: {why}: it is not signed "
                        f"by the CA in --ca {self.ca}: refusing to talk to it"
                    )
                if self.fingerprint:
                    return f"the server's certificate is not trusted: {why}"
                return (
                    f"the server's certificate is not trusted: {why}: if a private CA signed "
                    "it, pass --ca FILE (or set CONVEYOR_CA) with that CA's certificate"
                )
            if isinstance(seen, ssl.SSLError):
                return (
                    f"TLS failed ({seen.reason or seen}): is the server's URL right, and does "
                    "the server serve TLS (--tls-cert) on it?"
                )
            seen = seen.__cause__ or seen.__context__
        return None


@cache
def _context(trust: ServerTrust) -> ssl.SSLContext:
    if not trust.private:
        return client_tls()
    if trust.ca is not None:
        try:
            context = ssl.create_default_context(cafile=str(trust.ca))
        except ssl.SSLError as exc:
            raise TrustError(
                f"--ca {trust.ca}: no PEM certificate in it ({exc.reason or exc})"
            ) from None
        except OSError as exc:
            raise TrustError(f"--ca {trust.ca}: cannot read it ({exc.strerror or exc})") from None
    else:
        # the pin alone says who the server is: no CA, no host name to check
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if trust.fingerprint is not None:
        pin: dict[str, Any] = {"pin": trust.fingerprint}
        # documented hooks (SSLContext.sslobject_class / sslsocket_class): every handshake
        # of this context, async (httpx over anyio) and sync, checks the pin
        context.sslobject_class = type("PinnedObject", (_PinnedObject,), pin)
        context.sslsocket_class = type("PinnedSocket", (_PinnedSocket,), pin)
    return context


__all__ = [
    "PinMismatch",
    "ServerTrust",
    "TrustError",
    "check_server_certificate",
    "client_tls",
    "fingerprint",
    "parse_fingerprint",
]
