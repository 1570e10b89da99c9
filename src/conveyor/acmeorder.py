"""One ACME order over HTTP-01, for whichever wing orders: the agent for its host, or the
server for every host of an environment (deploy/certificates.py).

The protocol is certbot's `acme` package; this module only drives it. The caller's
`publish` makes the answers to the HTTP-01 tokens reachable on port 80 of whatever
address the CA resolves the names to (with {}, withdraws them); then the CA validates
and the order is finalized. Both wings share it, so it lives beside `certs.py` at the
package's top, importing neither wing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from conveyor.certs import CertError, check_pair

__all__ = [
    "ORDER_TIMEOUT",
    "Publish",
    "account_key",
    "describe",
    "new_key_pem",
    "obtain",
    "order_pair",
]

# the longest an order may take, challenges and finalization included
ORDER_TIMEOUT = 90.0

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

    `publish` makes the HTTP-01 tokens answered (and, with {}, no longer)."""
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


def order_pair(
    directory: str,
    email: str | None,
    account: JWKRSA,
    domains: Sequence[str],
    publish: Publish,
    verify: str | bool = True,
) -> tuple[bytes, bytes]:
    """A new key and its checked certificate chain (blocking), or CertError saying what
    the CA said."""
    key_pem = new_key_pem()
    try:
        chain = obtain(directory, email, account, domains, key_pem, publish, verify)
        check_pair(
            chain, key_pem, domains, dt.datetime.now(dt.UTC), cert_from="the ACME certificate"
        )
    except Exception as exc:
        raise CertError(describe(exc, directory, domains)) from None
    return chain, key_pem


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
            + "); the CA must reach the hosts' shared HTTP port by these names"
        )
    if isinstance(exc, errors.TimeoutError | TimeoutError):
        return f"ACME at {directory}: no certificate for {names} in {ORDER_TIMEOUT:g} s"
    if isinstance(exc, messages.Error):
        return f"ACME at {directory} refused the order for {names}: {exc.detail or exc}"
    if isinstance(exc, CertError):
        return str(exc)
    return f"ACME at {directory} failed for {names}: {type(exc).__name__}: {exc}"


def new_key_pem() -> bytes:
    """A fresh certificate key (P-256, PKCS#8 PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def account_key(folder: Path, directory: str) -> JWKRSA:
    """The account key kept in `folder` for a directory (made once, kept 0600)."""
    path = folder / f"account-{hashlib.sha256(directory.encode()).hexdigest()[:16]}.pem"
    try:
        loaded: Any = serialization.load_pem_private_key(path.read_bytes(), password=None)
        return JWKRSA(key=loaded)
    except FileNotFoundError:
        pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return JWKRSA(key=key)


def write_private(path: Path, data: bytes) -> None:
    """Replace a file atomically, 0600 from its first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
