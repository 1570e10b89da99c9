"""conveyor.tls: fingerprints, the server's certificate checks, and whom a client trusts,
against a real TLS server in a thread (certificates made by trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from conveyor.tls import (
    PinMismatch,
    ServerTrust,
    TrustError,
    check_server_certificate,
    client_tls,
    parse_fingerprint,
)

HEX = "5ff1b655caaca05ac494b2bf6ed96cd6f3be04549d10bed8b1522896c8291f03"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (HEX.upper(), f"sha256:{HEX}"),
        ("SHA256:" + ":".join(HEX[i : i + 2] for i in range(0, 64, 2)).upper(), f"sha256:{HEX}"),
        (f"  sha256={HEX}\n", f"sha256:{HEX}"),
        (f"sha256:{HEX[:-2]}", None),
        (f"sha1:{HEX}", None),
        ("sha256:" + "g" * 64, None),
        ("", None),
    ],
)
def test_parse_fingerprint(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(TrustError, match="--server-fingerprint"):
            parse_fingerprint(text)
    else:
        assert parse_fingerprint(text) == expected


@dataclass
class Files:
    cert: Path
    key: Path
    ca: Path
    other_ca: Path
    fingerprint: str


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.45.31", "localhost")
    found = Files(where / "cert.pem", where / "key.pem", where / "ca.pem", where / "other.pem", "")
    for blob in leaf.cert_chain_pems:  # the server's certificate, then its chain
        blob.write_to_path(str(found.cert), append=True)
    leaf.private_key_pem.write_to_path(str(found.key))
    ca.cert_pem.write_to_path(str(found.ca))
    trustme.CA().cert_pem.write_to_path(str(found.other_ca))
    found.fingerprint = check_server_certificate(found.cert, found.key)
    return found


def test_the_fingerprint_is_the_sha256_of_the_first_certificate(files: Files) -> None:
    first = files.cert.read_text().split("-----END CERTIFICATE-----")[0]
    der = ssl.PEM_cert_to_DER_cert(first + "-----END CERTIFICATE-----\n")
    assert files.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()


def test_bad_server_certificates_and_keys_say_which_file_and_why(
    files: Files, tmp_path: Path
) -> None:
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(other_key))
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    cases = [
        (tmp_path / "none.pem", files.key, "--tls-cert .*none.pem: cannot read it"),
        (files.cert, tmp_path, "--tls-key .*: cannot read it \\(Is a directory\\)"),
        (junk, files.key, "--tls-cert .*junk.pem: no PEM certificate in it"),
        (files.cert, junk, "--tls-key .*junk.pem: not a PEM private key"),
        (files.cert, other_key, "--tls-key .*other.key does not match the certificate"),
        (files.cert, encrypted, "--tls-key .*encrypted.key: the key is encrypted"),
    ]
    for cert, key_path, message in cases:
        with pytest.raises(TrustError, match=message):
            check_server_certificate(cert, key_path)


def test_a_ca_file_that_cannot_be_used_is_refused_at_once(files: Files, tmp_path: Path) -> None:
    with pytest.raises(TrustError, match=r"--ca .*missing\.pem: cannot read it"):
        ServerTrust.of(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    with pytest.raises(TrustError, match=r"--ca .*junk\.pem: no PEM certificate"):
        ServerTrust.of(junk)
    with pytest.raises(TrustError, match="not https://"):
        ServerTrust.of(files.ca).check_url("http://conveyor.example.com")
    ServerTrust.of(files.ca).check_url("https://conveyor.example.com")
    ServerTrust().check_url("http://conveyor.example.com")  # no CA, no pin: plain http is fine
    assert ServerTrust().context() is client_tls()
    assert ServerTrust.of(files.ca).context() is ServerTrust.of(str(files.ca)).context()


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(cert: Path, key: Path, address: str) -> Iterator[str]:
    """A real HTTPS server in a thread; yields its URL."""
    server = HTTPServer((address, 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://{address}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def https(files: Files) -> Iterator[str]:
    with serving(files.cert, files.key, "127.0.45.31") as url:
        yield url


def _get_both_ways(url: str, trust: ServerTrust) -> list[str | BaseException]:
    """GET with a sync client (ssl sockets) and an async one (ssl objects, anyio)."""

    async def async_get() -> str:
        async with httpx.AsyncClient(verify=trust.context()) as client:
            return (await client.get(url)).text

    results: list[str | BaseException] = []
    try:
        results.append(httpx.get(url, verify=trust.context()).text)
    except httpx.ConnectError as exc:
        results.append(exc)
    try:
        results.append(asyncio.run(async_get()))
    except httpx.ConnectError as exc:
        results.append(exc)
    return results


def test_the_right_ca_or_pin_is_trusted(files: Files, https: str) -> None:
    pinned_upper = files.fingerprint.upper().replace("SHA256:", "sha256:")
    for trust in (
        ServerTrust.of(files.ca),
        ServerTrust.of(None, files.fingerprint),
        ServerTrust.of(files.ca, pinned_upper),
    ):
        assert _get_both_ways(https, trust) == ["hello", "hello"], trust


def test_another_ca_a_wrong_pin_or_no_ca_are_refused_with_what_was_wrong(
    files: Files, https: str
) -> None:
    wrong = "sha256:" + "0" * 64
    cases = [
        (ServerTrust.of(files.other_ca), f"not signed by the CA in --ca {files.other_ca}"),
        (ServerTrust.of(None, wrong), f"is {files.fingerprint}, not {wrong}"),
        (ServerTrust.of(files.ca, wrong), f"is {files.fingerprint}, not {wrong}"),
        (ServerTrust(), "pass --ca FILE (or set CONVEYOR_CA)"),
    ]
    for trust, message in cases:
        for result in _get_both_ways(https, trust):
            assert isinstance(result, httpx.ConnectError), (trust, result)
            assert message in (trust.explain(result) or ""), (trust, trust.explain(result))


def test_a_certificate_made_for_another_name_is_refused(files: Files, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("conveyor.example.com")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trust = ServerTrust.of(tmp_path / "ca.pem")
    with serving(tmp_path / "cert.pem", tmp_path / "key.pem", "127.0.45.32") as url:
        for result in _get_both_ways(url, trust):
            assert isinstance(result, httpx.ConnectError), result
            assert "not made for the host name" in (trust.explain(result) or ""), result
        # pinned, the certificate itself is the identity: no name to check
        pinned = ServerTrust.of(
            None, check_server_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
        )
        assert _get_both_ways(url, pinned) == ["hello", "hello"]


def test_pin_mismatch_is_a_certificate_verification_error() -> None:
    assert issubclass(PinMismatch, ssl.SSLCertVerificationError)
