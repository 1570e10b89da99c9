"""Pebble, Let's Encrypt's ACME test server, with a mock DNS, for the `tls: acme` tests.

Debian's `pebble` package (scripts/setup.sh installs it) has both binaries: `pebble`
and `pebble-challtestsrv`, used here only as a DNS server that answers every name with
the agents' address (and a chosen name with another, for a challenge that must fail).
Pebble validates HTTP-01 for real (PEBBLE_VA_ALWAYS_VALID=0) on `http_port` of the
address a name resolves to; its API is HTTPS with a certificate from a trustme CA (the
agent gets it with `--acme-ca`); `validity` seconds make short-lived certificates, for
renewals within a test. Its own root (what clients verify served certificates with)
changes with each start: `root_pem()`.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
from pathlib import Path

import httpx
import trustme

from testbed.helpers import ManagedProcess, free_port, wait_for

__all__ = ["Pebble", "pebble_installed"]


def pebble_installed() -> bool:
    return shutil.which("pebble") is not None and shutil.which("pebble-challtestsrv") is not None


class Pebble:
    """Pebble on `address`, its DNS saying every name is `target`."""

    def __init__(
        self, workdir: Path, address: str, target: str, http_port: int, validity: int = 3600
    ) -> None:
        self.workdir = workdir
        self.address = address
        self.target = target
        self.http_port = http_port
        self.validity = validity
        self.port = free_port(address)
        self.management_port = free_port(address)
        self.dns_port = free_port(address)
        self.dns_management_port = free_port(address)
        self.ca = trustme.CA()
        self.ca_file = workdir / "pebble-api-ca.pem"
        self.pebble = ManagedProcess()
        self.pebble.log_path = workdir / "pebble.log"
        self.dns = ManagedProcess()
        self.dns.log_path = workdir / "pebble-dns.log"

    @property
    def directory(self) -> str:
        return f"https://{self.address}:{self.port}/dir"

    def start(self) -> Pebble:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        leaf = self.ca.issue_cert(self.address, "localhost")
        cert, key = self.workdir / "pebble-api.pem", self.workdir / "pebble-api.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        config = {
            "pebble": {
                "listenAddress": f"{self.address}:{self.port}",
                "managementListenAddress": f"{self.address}:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": free_port(self.address),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": self.validity,
            }
        }
        (self.workdir / "pebble.json").write_text(json.dumps(config))
        env = os.environ | {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_VA_ALWAYS_VALID": "0",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        dns = f"{self.address}:{self.dns_port}"
        self.dns.spawn(
            [
                "pebble-challtestsrv",
                "-defaultIPv4", self.target,
                "-defaultIPv6", "",
                "-dns01", dns,
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-management", f"{self.address}:{self.dns_management_port}",
            ],
            env,
        )  # fmt: skip
        self.pebble.spawn(
            ["pebble", "-config", str(self.workdir / "pebble.json"), "-dnsserver", dns], env
        )
        try:
            wait_for(self._ready, timeout=30, interval=0.2)
        except BaseException:
            self.stop()  # never left running by a start that failed
            raise
        return self

    def _ready(self) -> bool:
        if self.pebble.proc is not None and self.pebble.proc.poll() is not None:
            raise AssertionError(f"pebble exited:\n{self.pebble.log()[-2000:]}")
        if self.dns.proc is not None and self.dns.proc.poll() is not None:
            raise AssertionError(f"pebble-challtestsrv exited:\n{self.dns.log()[-2000:]}")
        try:
            httpx.get(self.directory, verify=self._trust(), timeout=2).raise_for_status()
            httpx.post(
                f"http://{self.address}:{self.dns_management_port}/set-default-ipv4",
                json={"ip": self.target},
                timeout=2,
            ).raise_for_status()
        except httpx.HTTPError:
            return False
        return True

    def _trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def resolve(self, name: str, address: str) -> None:
        """Make `name` resolve to `address` alone (where nothing answers: its challenges
        fail); challtestsrv adds to what a name had, so that is cleared first."""
        host = name.rstrip(".") + "."
        httpx.post(
            f"http://{self.address}:{self.dns_management_port}/clear-a",
            json={"host": host},
            timeout=5,
        ).raise_for_status()
        httpx.post(
            f"http://{self.address}:{self.dns_management_port}/add-a",
            json={"host": host, "addresses": [address]},
            timeout=5,
        ).raise_for_status()

    def root_pem(self) -> str:
        """The root Pebble issues under (new at each start): what clients trust."""
        r = httpx.get(
            f"https://{self.address}:{self.management_port}/roots/0",
            verify=self._trust(),
            timeout=5,
        )
        r.raise_for_status()
        return r.text

    def stop(self) -> None:
        for process in (self.pebble, self.dns):
            process.stop()
