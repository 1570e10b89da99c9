"""Hosts in network namespaces: a test can cut one off the network and bring it back.

A `NetNamespace` is a tiny machine of its own: a network namespace joined to the root
namespace by a veth pair on a private /30 (10.231.N.0/30, the gateway .1 on the root
side, the host .2 inside). Nothing inside has a default route, so a host reaches the
gateway and nothing else. `cut()` takes the link down: both directions go silent, as
when a cable is pulled; `restore()` brings it back. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from conveyor.agent.routing.haproxy_runtime import pid_alive
from tests.fleet import AgentProcess
from tests.helpers import ServerProcess, free_port, wait_for

PREFIX = "conveyor-test-"
# Who owns which namespace, so that a later run can reap what a killed worker left behind.
STATE_DIR = Path(tempfile.gettempdir()) / "conveyor-netns"
# A standing route under the link's own: while the link is down the /30 is unreachable
# instead of falling through to the default route and out of the sandbox.
FALLBACK_METRIC = 4242
INNER_VETH = "eth0"

__all__ = [
    "NamespacedAgent",
    "NetNamespace",
    "NetNamespaceError",
    "ServerOnAddress",
    "netns_available",
]


class NetNamespaceError(Exception):
    """An `ip` command that the harness needed failed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetNamespaceError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


@functools.cache
def netns_available() -> str | None:
    """None when this process can make network namespaces, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed: scripts/setup.sh installs it"
    token = secrets.token_hex(3)
    probe, veth = f"conveyor-probe-{token}", f"cvp-{token}"
    try:
        added = _ip("netns", "add", probe, check=False)
        if added.returncode != 0:
            return f"`ip netns add` failed: {added.stderr.strip()}"
        _ip("link", "add", veth, "type", "veth", "peer", "name", INNER_VETH, "netns", probe)
    except NetNamespaceError as exc:
        return f"cannot make a veth pair into a namespace: {exc}"
    finally:
        _ip("link", "del", veth, check=False)
        _ip("netns", "del", probe, check=False)
    return None


class NetNamespace:
    """A host in its own network namespace, reachable from the root namespace over a veth pair.

    Created by the constructor; `close()` (or leaving the `with` block) ends every process
    still inside and deletes the namespace, the veth pair and the fallback route.
    """

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.name = PREFIX + token
        self.veth = f"cvt-{token}"  # the root side; inside it is INNER_VETH
        self.index = -1
        self.host_address = ""
        self.gateway_address = ""
        self.is_cut = False
        self._closed = False
        self._owner = STATE_DIR / self.name
        try:
            self._create()
        except BaseException:
            with contextlib.suppress(NetNamespaceError):  # the first error is the one to see
                self.close()
            raise

    @property
    def subnet(self) -> str:
        return f"10.231.{self.index}.0/30"

    def _create(self) -> None:
        with _allocation_lock():
            _reap_orphans()
            self.index = _free_index()
            self.gateway_address = f"10.231.{self.index}.1"
            self.host_address = f"10.231.{self.index}.2"
            # recorded before anything exists, so that a partial namespace can be reaped
            self._owner.write_text(
                json.dumps({"pid": os.getpid(), "index": self.index, "veth": self.veth})
            )
            _ip("netns", "add", self.name)
            # the peer is born inside: the root namespace has its own eth0
            _ip(
                "link",
                "add",
                self.veth,
                "type",
                "veth",
                "peer",
                "name",
                INNER_VETH,
                "netns",
                self.name,
            )
            _ip("addr", "add", f"{self.gateway_address}/30", "dev", self.veth)
            _ip("route", "add", "unreachable", self.subnet, "metric", str(FALLBACK_METRIC))
            _ip("link", "set", self.veth, "up")
            self._inside_ip("addr", "add", f"{self.host_address}/30", "dev", INNER_VETH)
            self._inside_ip("link", "set", INNER_VETH, "up")
            self._inside_ip("link", "set", "lo", "up")
        self._wait_link_up()

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNamespace({self.name}, host {self.host_address}, cut={self.is_cut})"

    # running things inside
    def command(self, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Started, and inside the namespace when this returns: `ip netns exec` joins it
        before it execs, and a close() that listed the namespace's processes before the
        join would leave this one running."""
        proc = subprocess.Popen(self.command(argv), **popen_kw)
        wait_for(lambda: proc.poll() is not None or proc.pid in self.pids(), timeout=10)
        return proc

    def run(self, argv: Sequence[str], **run_kw: Any) -> subprocess.CompletedProcess[Any]:
        run_kw.setdefault("timeout", 60)
        return subprocess.run(self.command(argv), **run_kw)

    def fetch(self, url: str, timeout: float = 5) -> str:
        """GET url from a client inside the namespace; the body, or NetNamespaceError."""
        code = (
            "import sys, urllib.request\n"
            "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:\n"
            "    sys.stdout.write(r.read().decode())\n"
        )
        done = self.run(
            [sys.executable, "-c", code, url, str(timeout)],
            capture_output=True,
            text=True,
            timeout=timeout + 30,
        )
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or ["?"]
            raise NetNamespaceError(f"GET {url} from inside {self.name}: {last[0]}")
        return str(done.stdout)

    def pids(self) -> list[int]:
        """Processes running inside the namespace."""
        listed = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in listed.stdout.split() if p.isdigit()]

    # the network
    def cut(self) -> None:
        """Pull the cable: the host and the root namespace no longer hear each other.

        Packets from inside are dropped silently (the host side loses its carrier, as
        with a dead switch port); senders in the root namespace get "no route to host".
        Established connections are not reset: they resume if restored in time.
        """
        _ip("link", "set", self.veth, "down")
        self.is_cut = True

    def restore(self) -> None:
        """Plug the cable back in; returns once both ends are up."""
        _ip("link", "set", self.veth, "up")
        self._wait_link_up()
        self.is_cut = False

    def _wait_link_up(self) -> None:
        def up() -> bool:
            outer = _ip("-o", "link", "show", self.veth, check=False).stdout
            inner = self._inside_ip("-o", "link", "show", INNER_VETH, check=False).stdout
            route = _ip("route", "get", self.host_address, check=False).stdout
            return "LOWER_UP" in outer and "LOWER_UP" in inner and f"dev {self.veth}" in route

        wait_for(up, timeout=10, interval=0.05)

    def _inside_ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _ip("-n", self.name, *args, check=check)

    # the end
    def close(self) -> None:
        """End everything inside, delete the namespace, its veth pair and route. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _teardown(self.name, self.veth, self.index)
        problems = []
        if self.name in _namespaces():
            problems.append(f"namespace {self.name} is still there")
        if _ip("link", "show", self.veth, check=False).returncode == 0:
            problems.append(f"veth {self.veth} is still there")
        if problems:
            raise NetNamespaceError("; ".join(problems))


class ServerOnAddress(ServerProcess):
    """`conveyor server` listening on a given address (e.g. a namespace's gateway address)."""

    def __init__(self, data: Path, address: str, env: dict[str, str] | None = None) -> None:
        super().__init__(data, env)
        self.http.close()
        self.address = address
        self.port = free_port(address)
        self.url = f"http://{address}:{self.port}"
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def start(self) -> ServerOnAddress:
        env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": self.token, **self.extra_env}
        listen = f"{self.address}:{self.port}"
        args = [sys.executable, "-m", "conveyor", "server", "--data", str(self.data)]
        self.spawn([*args, "--listen", listen], env)
        wait_for(self._healthy, timeout=60)
        return self


class NamespacedAgent(AgentProcess):
    """`conveyor agent` started inside a namespace; its router binds the host's address.

    Its router and instances are its children, so they run inside too. The server must
    listen where the host can reach it: the namespace's gateway address.
    """

    def __init__(
        self,
        server: ServerProcess,
        name: str,
        data: Path,
        *,
        netns: NetNamespace,
        router: str = "embedded",
    ) -> None:
        super().__init__(server, name, data, address=netns.host_address, router=router)
        self.netns = netns

    def spawn(self, args: list[str], env: dict[str, str]) -> None:
        super().spawn(self.netns.command(args), env)


# allocation and reaping, shared by parallel pytest-xdist workers through a lock file


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_index() -> int:
    """A /30 that no address or route in the root namespace uses (called under the lock)."""
    seen = _ip("-o", "addr", "show").stdout + _ip("route", "show").stdout
    used = {int(n) for n in re.findall(r"\b10\.231\.(\d+)\.", seen)}
    used |= {_owner_record(p).get("index", -1) for p in STATE_DIR.glob(PREFIX + "*")}
    free = [n for n in range(256) if n not in used]
    if not free:
        raise NetNamespaceError("all 256 test subnets 10.231.N.0/30 are in use")
    return random.choice(free)


def _namespaces() -> list[str]:
    listed = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _owner_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _reap_orphans() -> None:
    """Tear down namespaces whose owning test process died without closing them."""
    for owner in STATE_DIR.glob(PREFIX + "*"):
        record = _owner_record(owner)
        pid = record.get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            continue
        _teardown(owner.name, str(record.get("veth", "")), int(record.get("index", -1)))


def _teardown(name: str, veth: str, index: int) -> None:
    """Kill what runs inside, delete the veth pair, the fallback route, the namespace."""
    if name in _namespaces():
        for _ in range(50):
            listed = _ip("netns", "pids", name, check=False).stdout.split()
            pids = [int(p) for p in listed if p.isdigit()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
    if veth:
        _ip("link", "del", veth, check=False)
    if index >= 0:
        _ip("route", "del", "unreachable", f"10.231.{index}.0/30", check=False)
    _ip("netns", "del", name, check=False)
    if name not in _namespaces():
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / name).unlink()
