"""Fixtures of the host-side tests: real files, real processes, real HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import signal
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conveyor.agent import children, procfs, supervisor


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in a fresh event loop (no plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


# -- processes --------------------------------------------------------------------------


def kill_instances(data: Path) -> None:
    """Kill every process started for this data directory, and reap our children."""
    mine = str(data.resolve())
    for pid in procfs.pids():
        if procfs.environ(pid).get(supervisor.DATA_VAR) == mine:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for pid in children.pids():
        if procfs.environ(pid).get(supervisor.DATA_VAR) in (mine, None):
            children.reap(pid, timeout=5)


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A fresh agent data directory; every instance started under it is killed afterwards."""
    path = tmp_path / "data"
    path.mkdir()
    try:
        yield path
    finally:
        kill_instances(path)


APP_SOURCE = """\
import http.server, json, os, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(os.environ)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
print("listening on", os.environ["PORT"], flush=True)
server.serve_forever()
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A release directory holding a tiny HTTP app that answers its environment as JSON."""
    path = tmp_path / "release"
    path.mkdir()
    (path / "app.py").write_text(APP_SOURCE)
    return path


APP_COMMAND = f"exec {sys.executable} app.py"


# -- HTTP -------------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    require: dict[str, str] = field(default_factory=dict)  # request headers that must match
    truncate_to: int | None = None  # send only this many body bytes, then close
    hang_up: bool = False  # close the connection without answering (a stale keep-alive)


@dataclass
class HttpServer:
    """A threaded HTTP server on 127.0.0.1 whose answers tests set per path."""

    routes: dict[str, Route | Callable[[], Route]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    state = HttpServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.hits.append(self.path)
            found = state.routes.get(self.path)
            route = found() if callable(found) else found
            if route is None:
                route = Route(status=404, body=b"not found")
            if route.hang_up:
                self.close_connection = True
                return
            if any(self.headers.get(k) != v for k, v in route.require.items()):
                route = Route(status=401, body=b"unauthorized")
            self.send_response(route.status)
            for key, value in route.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(route.body)))
            if route.truncate_to is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            body = route.body if route.truncate_to is None else route.body[: route.truncate_to]
            self.wfile.write(body)
            if route.truncate_to is not None:
                self.wfile.flush()
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- tarballs ---------------------------------------------------------------------------


@dataclass
class Entry:
    """One member of a test tarball, written as given (malicious ones included)."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""


def file(name: str, data: bytes = b"x\n", mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode)


def directory(name: str) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def make_tarball(path: Path, entries: list[Entry]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.mode = entry.mode
            info.linkname = entry.linkname
            info.mtime = 946684800
            if entry.type == tarfile.REGTYPE:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return path


GOOD_ENTRIES = [
    directory("app"),
    file("app/server.py", b"print('hello')\n"),
    file("bin/install", b"#!/bin/sh\necho installed > installed.txt\n", mode=0o755),
    symlink("server.py", "app/server.py"),
    hardlink("app/copy.py", "app/server.py"),
    symlink("uploads", "shared/uploads"),
]


@pytest.fixture
def good_tarball(tmp_path: Path) -> Path:
    return make_tarball(tmp_path / "good.tar.gz", GOOD_ENTRIES)
