"""Unpacking an untrusted tar.gz safely: every member checked, then tarfile's 'data' filter.

Refused, each with a message naming the member: absolute paths, '..' components,
symlinks or hard links leading outside the directory (also through chains of links),
members under a symlink, device files, FIFOs, setuid/setgid bits.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Collection
from pathlib import Path

from conveyor.agent.errors import InstallError

__all__ = ["extract", "member_problem", "remove_tree"]


def member_problem(
    member: tarfile.TarInfo, symlinks: Collection[str], files: Collection[str]
) -> str | None:
    """Why a member may not be unpacked (None if it may), given the members before it.

    `symlinks` and `files` hold the normalised names of the symlinks (all of them) and of
    the regular files before this member.
    """
    problem = _name_problem(member.name) or _kind_problem(member)
    if problem is not None:
        return problem
    name = posixpath.normpath(member.name)
    if name == "." and not member.isdir():
        return "would replace the release directory itself"
    parent = _under_symlink(name, symlinks)
    if parent is not None:
        return f"lies under the symlink {parent!r}"
    if member.issym():
        return _symlink_problem(name, member.linkname)
    if member.islnk():
        return _hard_link_problem(member.linkname, symlinks, files)
    return None


def _name_problem(raw: str) -> str | None:
    if not raw or "\0" in raw:
        return "has an empty or invalid name"
    if raw.startswith("/"):
        return "has an absolute path"
    if ".." in raw.split("/"):
        return "has a '..' component"
    return None


def _kind_problem(member: tarfile.TarInfo) -> str | None:
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return f"has an unsupported type ({member.type!r})"
    if member.mode & stat.S_ISUID:
        return "has the setuid bit"
    if member.mode & stat.S_ISGID:
        return "has the setgid bit"
    return None


def _symlink_problem(name: str, link: str) -> str | None:
    if not link or link.startswith("/"):
        return f"is a symlink to {link!r}, outside the release directory"
    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
    if target == ".." or target.startswith("../"):
        return f"is a symlink to {link!r}, outside the release directory"
    return None


def _hard_link_problem(link: str, symlinks: Collection[str], files: Collection[str]) -> str | None:
    target = posixpath.normpath(link) if link else ""
    if not link or link.startswith("/") or target == ".." or target.startswith("../"):
        return f"is a hard link to {link!r}, outside the release directory"
    via = _under_symlink(target, symlinks)
    if via is not None:
        return f"is a hard link to {link!r}, through the symlink {via!r}"
    if target not in files:
        return f"is a hard link to {link!r}, which is not a file earlier in the archive"
    return None


def _under_symlink(name: str, symlinks: Collection[str]) -> str | None:
    parts = name.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if prefix in symlinks:
            return prefix
    return None


def extract(archive: Path, dest: Path) -> None:
    """Check every member, then extract with tarfile's 'data' filter as a second guard."""
    label = archive.name
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            symlinks = {posixpath.normpath(m.name) for m in members if m.issym() and m.name}
            files: set[str] = set()
            for member in members:
                problem = member_problem(member, symlinks, files)
                if problem is not None:
                    raise InstallError(
                        f"{label}: member {member.name!r} {problem}; refused, nothing was installed"
                    )
                if member.isreg():
                    files.add(posixpath.normpath(member.name))
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                name = exc.tarinfo.name if exc.tarinfo is not None else "?"
                raise InstallError(
                    f"{label}: member {name!r} refused ({exc}); nothing was installed"
                ) from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InstallError(
            f"{label}: the archive is truncated or is not a tar.gz ({exc}); nothing was installed"
        ) from exc
    except OSError as exc:
        raise InstallError(f"{label}: cannot unpack into {dest}: {exc}") from exc
    _check_tree(dest, label)


def _check_tree(root: Path, label: str) -> None:
    """After extraction: no link escapes (through chains of links), no special file."""
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = os.path.join(dirpath, entry)
            rel = os.path.relpath(path, root)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                real = os.path.realpath(path)
                if os.path.commonpath([real, real_root]) != real_root:
                    raise InstallError(
                        f"{label}: member {rel!r} is a symlink that resolves outside the "
                        "release directory (through other links); refused, nothing was installed"
                    )
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise InstallError(f"{label}: member {rel!r} is not a file, directory or link")


def remove_tree(path: Path) -> None:
    def writable(func: object, name: str, _exc: object) -> None:
        # a release may hold read-only directories: make them writable and retry
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), 0o700)
            os.chmod(name, 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.rmdir(name)
            else:
                os.unlink(name)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=writable)
