"""Is this certificate and key fit to serve these domains? Pure checks (issue 14 point 2).

A pair is refused, with what was wrong and where, when: the certificate or key is not
PEM (or the key is encrypted), the key is not the certificate's, the certificate has
expired or is not valid yet, or a domain of the app is not among its names. The agent
runs these before a certificate reaches the router, so a bad one never replaces a good
one: the previous certificate and routing keep serving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from conveyor.hostroutes import CATCH_ALL

__all__ = ["CertError", "CertInfo", "check_pair", "covers", "renewal_due", "served_pem"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class CertError(ValueError):
    """A certificate or key that cannot serve the app's domains; the message says why."""


@dataclass(frozen=True)
class CertInfo:
    """What the agent keeps of a checked certificate."""

    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    fingerprint: str  # sha256:<hex> of the leaf, DER

    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


def check_pair(
    cert_pem: bytes,
    key_pem: bytes,
    domains: Sequence[str],
    now: datetime,
    *,
    cert_from: str = "the certificate",
    key_from: str = "the key",
) -> CertInfo:
    """The leaf's names and dates, or CertError saying what is wrong (`*_from` name where
    each came from, for the message)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertError(
            f"{cert_from} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ) from None
    leaf = chain[0]
    key = _load_key(key_pem, key_from)
    if leaf.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise CertError(
            f"{key_from} is not the key of {cert_from} (a key of another certificate); "
            "expected the key the certificate was issued for"
        )
    info = CertInfo(
        names=_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint="sha256:"
        + hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )
    if now >= info.not_after:
        raise CertError(f"{cert_from} expired on {_when(info.not_after)}; renew it")
    if now < info.not_before:
        raise CertError(f"{cert_from} is not valid before {_when(info.not_before)}")
    missing = [d for d in domains if d != CATCH_ALL and not covers(info.names, d)]
    if missing:
        shown = ", ".join(info.names) or "no DNS name"
        raise CertError(
            f"{cert_from} does not cover {', '.join(missing)} (it names {shown}); expected "
            "a certificate for every domain of the app"
        )
    return info


def _load_key(key_pem: bytes, key_from: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertError(f"{key_from} is encrypted; expected an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertError(
            f"{key_from} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----)"
        ) from None


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))


def covers(names: Sequence[str], domain: str) -> bool:
    """Whether a certificate naming `names` serves `domain` (`*.x` covers one label)."""
    if domain in names:
        return True
    head, _, rest = domain.partition(".")
    return bool(rest) and head != "" and f"*.{rest}" in names and not domain.startswith("*.")


def renewal_due(info: CertInfo, now: datetime) -> bool:
    """Renew once less than a third of its lifetime is left (30 of Let's Encrypt's 90 days)."""
    return (info.not_after - now).total_seconds() < info.lifetime() / 3


def served_pem(cert_pem: bytes, key_pem: bytes) -> bytes:
    """The file both routers load: the certificate chain, then the key."""
    cert = cert_pem.strip() + b"\n"
    return cert + key_pem.strip() + b"\n"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
