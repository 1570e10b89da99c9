"""Putting a release on disk: download, verify, unpack safely, hook, switch `current`, prune.

Layout (Capistrano's, simplest form):

    <data>/<app>/releases/<release>/   one directory per release, never changed once in place
    <data>/<app>/releases/<release>/shared -> ../../shared
    <data>/<app>/shared/                kept across releases
    <data>/<app>/current -> releases/<release>   replaced by an atomic rename
    <data>/<app>/downloads/<release>.tar.gz      the downloaded artifact (see archive_path)
    <data>/<app>/logs/<release>-<port>.log        instance output (supervisor.py), hook logs
    <data>/<app>/migrations.json                  migrations run on this host (migrations.py)

Every step either completes or leaves nothing behind: downloads and unpacks go to
temporary names beside their destination and are renamed into place at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import secrets
import signal
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conveyor.agent import procfs
from conveyor.agent.confine import resolve_user
from conveyor.agent.errors import InstallError, StartError
from conveyor.agent.records import AgentState, ReleaseRecord, StateFile, fsync_dir
from conveyor.agent.spawn import indent, log_tail, process_env
from conveyor.agent.unpack import extract, remove_tree
from conveyor.tls import client_tls

__all__ = [
    "KEEP_RELEASES",
    "HookExit",
    "InstallError",
    "Installer",
    "check_name",
    "file_sha256",
]

log = logging.getLogger("conveyor.agent.installer")

KEEP_RELEASES = 5
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DOWNLOAD_ATTEMPTS = 3
# what a connection closed by the server under our feet looks like, before any answer
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
HOOK_KILL_GRACE = 5.0
SHARED_LINK = "shared"
_CHUNK = 1 << 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# ids become path components: no separators, no leading dot, nothing a shell would trip on
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_UNPACK_PREFIX = ".unpack-"
_TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class HookExit:
    """How a hook ended."""

    code: int | None  # its exit status (negative: killed by that signal); None: timed out
    since: int  # where its output starts in its log file


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value) or ".." in value:
        raise InstallError(
            f"invalid {kind} {value!r}: expected letters, digits, '.', '_' and '-' "
            "(not starting with '.', no '..')"
        )
    return value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Installer:
    """Installs releases of apps under one data directory."""

    def __init__(self, data_dir: Path, state: StateFile | None = None) -> None:
        self.data_dir = data_dir
        self.state = state or StateFile(data_dir)

    # -- layout -------------------------------------------------------------------------

    def app_dir(self, app: str) -> Path:
        return self.data_dir / check_name("app name", app)

    def releases_dir(self, app: str) -> Path:
        return self.app_dir(app) / "releases"

    def release_dir(self, app: str, release: str) -> Path:
        return self.releases_dir(app) / check_name("release id", release)

    def shared_dir(self, app: str) -> Path:
        return self.app_dir(app) / "shared"

    def current_link(self, app: str) -> Path:
        return self.app_dir(app) / "current"

    def archive_path(self, app: str, release: str) -> Path:
        """Where the artifact of a release is downloaded to (removed when it is pruned)."""
        return self.app_dir(app) / "downloads" / f"{check_name('release id', release)}.tar.gz"

    def is_installed(self, app: str, release: str) -> bool:
        """Whether the release's directory is in place (it only ever appears complete)."""
        path = self.release_dir(app, release)
        return path.is_dir() and not path.is_symlink()

    # -- download -----------------------------------------------------------------------

    async def download(
        self,
        url: str,
        headers: Mapping[str, str],
        dest: Path,
        expected_sha256: str,
        client: httpx.AsyncClient | None = None,
    ) -> Path:
        """Fetch url to dest, refusing anything whose sha256 is not the expected one."""
        expected = expected_sha256.strip().lower()
        if not _SHA256.match(expected):
            raise InstallError(f"expected checksum {expected_sha256!r} is not a sha256 hex digest")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        http = client or httpx.AsyncClient(
            timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, verify=client_tls()
        )
        received = 0
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
                    try:
                        async with http.stream("GET", url, headers=dict(headers)) as response:
                            if response.status_code != 200:
                                raise InstallError(
                                    f"download of {url} failed: HTTP {response.status_code} "
                                    f"{response.reason_phrase}".rstrip()
                                )
                            # with a content-encoding the length counts encoded bytes: httpx
                            # itself notices a short body then
                            declared = (
                                None
                                if response.headers.get("content-encoding")
                                else response.headers.get("content-length")
                            )
                            async for chunk in response.aiter_bytes(_CHUNK):
                                out.write(chunk)
                                digest.update(chunk)
                                received += len(chunk)
                        break
                    except _STALE as exc:
                        # a pooled keep-alive connection the server was closing as idle fails
                        # before any byte: the GET is idempotent and nothing was written
                        if received > 0 or attempt == DOWNLOAD_ATTEMPTS:
                            raise InstallError(
                                f"download of {url} failed after {received} bytes: "
                                f"{type(exc).__name__}: {exc}"
                            ) from exc
                        log.warning(
                            "download retried",
                            extra={"url": url, "attempt": attempt, "error": repr(exc)},
                        )
                    except httpx.HTTPError as exc:
                        raise InstallError(
                            f"download of {url} failed after {received} bytes: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                if declared is not None and declared.isdigit() and received != int(declared):
                    raise InstallError(
                        f"download of {url} is truncated: got {received} of {declared} bytes"
                    )
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != expected:
                raise InstallError(
                    f"checksum mismatch: expected {expected}, got {actual} "
                    f"({received} bytes from {url}); the artifact is corrupt or was tampered "
                    "with, and nothing was installed"
                )
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if client is None:
                await http.aclose()
        log.info("downloaded", extra={"url": url, "dest": str(dest), "bytes": received})
        return dest

    # -- unpack -------------------------------------------------------------------------

    def unpack(self, app: str, release: str, archive: Path) -> Path:
        """Unpack a tar.gz into `releases/<release>/` atomically; reuse it if already there.

        Blocking (CPU and disk): call it with `asyncio.to_thread` from the event loop.
        """
        final = self.release_dir(app, release)
        releases = final.parent
        sha256 = file_sha256(archive)
        if final.is_dir() and not final.is_symlink():
            return self._reuse(app, release, final, sha256)
        releases.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers(releases)
        tmp = Path(
            tempfile.mkdtemp(prefix=f"{_UNPACK_PREFIX}{release}-{os.getpid()}-", dir=releases)
        )
        try:
            extract(archive, tmp)
            if os.path.lexists(tmp / SHARED_LINK):
                raise InstallError(
                    f"{archive.name}: member 'shared' is in the way: conveyor links "
                    f"<release>/shared to {self.shared_dir(app)} (kept across releases); "
                    "rename it in the artifact"
                )
            self.shared_dir(app).mkdir(parents=True, exist_ok=True)
            os.symlink(posixpath.join("..", "..", "shared"), tmp / SHARED_LINK)
            tmp.chmod(0o755)  # mkdtemp made it 0700
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if not final.is_dir():
                    raise InstallError(f"cannot move {release} into {final}: {exc}") from exc
                # another unpack of the same release won the race: use its directory
                remove_tree(tmp)
                return self._reuse(app, release, final, sha256)
        except BaseException:
            remove_tree(tmp)
            raise
        fsync_dir(releases)
        self._record(app, release, sha256)
        log.info("unpacked", extra={"app": app, "release": release, "dir": str(final)})
        return final

    def _reuse(self, app: str, release: str, final: Path, sha256: str) -> Path:
        recorded = self.state.load().releases.get(app, {}).get(release)
        if recorded is not None and recorded.sha256 != sha256:
            raise InstallError(
                f"release {release} of {app} is already installed in {final} from another "
                f"artifact (sha256 {recorded.sha256}, this one {sha256}); a release id names "
                "one content: remove the directory if it is damaged"
            )
        if recorded is None:
            self._record(app, release, sha256, installed_at=final.lstat().st_mtime)
        return final

    def _record(
        self, app: str, release: str, sha256: str, installed_at: float | None = None
    ) -> None:
        entry = ReleaseRecord(installed_at=installed_at or time.time(), sha256=sha256)
        self.state.update(lambda s: s.releases.setdefault(app, {}).__setitem__(release, entry))

    def _remove_leftovers(self, releases: Path) -> None:
        """Temporary directories of unpacks or prunes that a crash interrupted."""
        for entry in releases.iterdir():
            name = entry.name
            if name.startswith(_TRASH_PREFIX):
                remove_tree(entry)
            elif name.startswith(_UNPACK_PREFIX):
                owner = name[len(_UNPACK_PREFIX) :].rsplit("-", 2)
                pid = int(owner[1]) if len(owner) == 3 and owner[1].isdigit() else 0
                if pid != os.getpid() and not procfs.is_running(pid):
                    remove_tree(entry)

    # -- hooks --------------------------------------------------------------------------

    async def run_hook(
        self,
        command: str,
        release_dir: Path,
        env: Mapping[str, str],
        log_path: Path,
        timeout: float,
        name: str = "install",
    ) -> None:
        """Run a hook with bash in the release directory; raise InstallError unless it exits 0."""
        done = await self.exec_hook(command, release_dir, env, log_path, timeout, name)
        tail = indent(log_tail(log_path, since=done.since))
        if done.code is None:
            raise InstallError(
                f"{name} hook `{command}` timed out after {timeout:g}s in {release_dir} and was "
                f"killed; last lines of {log_path}:\n{tail}"
            )
        if done.code != 0:
            how = (
                f"was killed by signal {-done.code}"
                if done.code < 0
                else f"exited with code {done.code}"
            )
            raise InstallError(
                f"{name} hook `{command}` {how} in {release_dir}; last lines of {log_path}:\n{tail}"
            )

    async def exec_hook(
        self,
        command: str,
        release_dir: Path,
        env: Mapping[str, str],
        log_path: Path,
        timeout: float,
        name: str = "install",
        on_start: Callable[[int, int], None] | None = None,
        user: str | None = None,
    ) -> HookExit:
        """Run a hook with bash in the release directory, its output appended to log_path.

        Returns how it ended; raises InstallError only if it could not start. It runs in a
        session of its own (pid = process group), as `user` if given (service.user), and
        on_start(pid, offset) is called as soon as it runs. Cancelling the call kills the
        whole group.
        """
        as_user: dict[str, Any] = {}
        user_env: dict[str, str] = {}
        if user is not None:
            try:
                run_as = resolve_user(user)
            except StartError as exc:
                raise InstallError(f"{name} hook `{command}` could not start: {exc}") from None
            as_user = {"user": run_as.uid, "group": run_as.gid, "extra_groups": run_as.groups}
            user_env = run_as.env()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            out.write(f"--- conveyor: {name} hook: {command}\n".encode())
            out.flush()
            since = out.tell()
            try:
                proc = await asyncio.create_subprocess_exec(
                    "bash",
                    "-c",
                    command,
                    cwd=release_dir,
                    env=process_env(user_env, env),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    **as_user,
                )
            except OSError as exc:
                raise InstallError(
                    f"{name} hook `{command}` could not start in {release_dir}: {exc}"
                ) from exc
        try:
            if on_start is not None:
                on_start(proc.pid, since)
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            await _end_group(proc)
            return HookExit(code=None, since=since)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        return HookExit(code=code, since=since)

    # -- current ------------------------------------------------------------------------

    def switch_current(self, app: str, release: str) -> None:
        """Point `current` at a release: a new symlink renamed over the old one, never missing."""
        target = self.release_dir(app, release)
        if not target.is_dir():
            raise InstallError(f"cannot switch {app} to {release}: {target} is not installed")
        link = self.current_link(app)
        tmp = link.with_name(f".current-{secrets.token_hex(6)}")
        os.symlink(posixpath.join("releases", release), tmp)
        try:
            os.replace(tmp, link)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InstallError(
                f"cannot switch {link} to {release}: {exc} (is it a directory rather than "
                "a symlink? move it away)"
            ) from exc
        fsync_dir(link.parent)
        log.info("current switched", extra={"app": app, "release": release})

    def current(self, app: str) -> str | None:
        """The release `current` points at, or None."""
        try:
            target = os.readlink(self.current_link(app))
        except OSError:
            return None
        head, _, name = target.rstrip("/").rpartition("/")
        return name if head.endswith("releases") and name else None

    # -- pruning ------------------------------------------------------------------------

    def releases(self, app: str) -> list[str]:
        """Installed releases, newest first (by recorded install time, else mtime)."""
        root = self.releases_dir(app)
        if not root.is_dir():
            return []
        recorded = self.state.load().releases.get(app, {})
        found: list[tuple[float, str]] = []
        for entry in root.iterdir():
            if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
                continue
            record = recorded.get(entry.name)
            when = record.installed_at if record else entry.lstat().st_mtime
            found.append((when, entry.name))
        return [name for _, name in sorted(found, reverse=True)]

    def prune(self, app: str, keep: int = KEEP_RELEASES, in_use: Collection[str] = ()) -> list[str]:
        """Delete all but the newest `keep` releases, never one in use nor `current`."""
        installed = self.releases(app)
        protected = set(in_use)
        current = self.current(app)
        if current is not None:
            protected.add(current)
        doomed = [name for name in installed[max(keep, 0) :] if name not in protected]
        root = self.releases_dir(app)
        if root.is_dir():
            self._remove_leftovers(root)
        for name in doomed:
            # renamed first, so a half-deleted release never looks installed
            trash = root / f"{_TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
            os.rename(root / name, trash)
            remove_tree(trash)
            self.archive_path(app, name).unlink(missing_ok=True)
            logs = self.app_dir(app) / "logs"
            if logs.is_dir():
                # the release's hook logs (<release>-install.log, <release>-migrate-<id>.log)
                # and its instances' logs (<release>-<port>.log)
                mine = re.compile(rf"^{re.escape(name)}-([a-z]+|[0-9]+|migrate-[^/]+)\.log$")
                for path in logs.iterdir():
                    if mine.match(path.name):
                        path.unlink(missing_ok=True)
        if doomed:

            def forget(state: AgentState) -> None:
                releases = state.releases.get(app, {})
                for name in doomed:
                    releases.pop(name, None)

            self.state.update(forget)
            log.info("pruned", extra={"app": app, "removed": doomed})
        return doomed


async def _end_group(proc: asyncio.subprocess.Process, grace: float = HOOK_KILL_GRACE) -> None:
    """SIGTERM the process group, SIGKILL it after grace, and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
