"""Building the release artifact: a deterministic tar.gz of a checked-out tree.

The same tree always gives the same bytes: entries are sorted, and times, owners
and modes are normalised, so a release's sha256 identifies its content.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

# 2000-01-01T00:00:00Z: fixed, and after 1980 so that zip-minded tools don't choke.
FIXED_MTIME = 946684800
ALWAYS_EXCLUDED = (".git",)


class ArtifactError(Exception):
    """The artifact section names something that cannot be packed."""


@dataclass(frozen=True)
class BuiltArtifact:
    path: Path
    sha256: str
    size: int
    files: int


def _excluded(rel: PurePosixPath, is_dir: bool, patterns: list[str]) -> bool:
    if rel.parts and rel.parts[0] in ALWAYS_EXCLUDED:
        return True
    text = rel.as_posix()
    for raw in patterns:
        pattern = raw.strip()
        if pattern.startswith("./"):
            pattern = pattern[2:]
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if not pattern:
            continue
        if dir_only and not is_dir:
            # "tests/" excludes the directory; the files under it go with it
            if any(fnmatch(p.as_posix(), pattern) for p in rel.parents if p.parts):
                return True
            continue
        anchored = "/" in pattern
        if anchored:
            if fnmatch(text, pattern) or any(
                fnmatch(p.as_posix(), pattern) for p in rel.parents if p.parts
            ):
                return True
        elif any(fnmatch(part, pattern) for part in rel.parts):
            return True
    return False


def collect(root: Path, include: list[str], exclude: list[str]) -> list[PurePosixPath]:
    """The sorted relative paths that make up the artifact."""
    root = root.resolve()
    found: set[PurePosixPath] = set()
    for entry in include or ["."]:
        start = (root / entry).resolve() if entry not in (".", "./") else root
        if start != root and root not in start.parents:
            raise ArtifactError(f"artifact.include entry {entry!r} points outside the repository")
        if not start.exists() and not start.is_symlink():
            raise ArtifactError(
                f"artifact.include entry {entry!r} does not exist in the build tree"
            )
        for path in _walk(start):
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if rel.parts and not _excluded(rel, path.is_dir() and not path.is_symlink(), exclude):
                found.add(rel)
    # a kept file needs its parent directories, even when they were reached only through it
    for rel in list(found):
        found.update(p for p in rel.parents if p.parts)
    return sorted(found, key=lambda p: p.parts)


def _walk(start: Path) -> Iterator[Path]:
    yield start
    if start.is_dir() and not start.is_symlink():
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if d not in ALWAYS_EXCLUDED]
            for name in dirnames + filenames:
                yield Path(dirpath) / name


def _tarinfo(root: Path, rel: PurePosixPath) -> tuple[tarfile.TarInfo, Path | None]:
    path = root / rel
    st = path.lstat()
    info = tarfile.TarInfo(rel.as_posix())
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    executable = bool(st.st_mode & stat.S_IXUSR)
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
        return info, None
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return info, None
    if stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if executable else 0o644
        info.size = st.st_size
        return info, path
    raise ArtifactError(f"{rel}: only files, directories and symlinks can go in an artifact")


def build_artifact(root: Path, include: list[str], exclude: list[str], out: Path) -> BuiltArtifact:
    """Pack `root` into `out` deterministically and return its digest."""
    entries = collect(root, include, exclude)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    files = 0
    with open(out, "wb") as raw:
        sink = _HashingWriter(raw, digest)
        # mtime=0 and no file name keep the gzip header stable
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for info, source in (_tarinfo(root, rel) for rel in entries):
                if source is None:
                    tar.addfile(info)
                else:
                    files += 1
                    with open(source, "rb") as fh:
                        tar.addfile(info, fh)
    return BuiltArtifact(path=out, sha256=digest.hexdigest(), size=out.stat().st_size, files=files)


class _HashingWriter(io.RawIOBase):
    def __init__(self, raw: io.BufferedWriter, digest: hashlib._Hash) -> None:
        self._raw = raw
        self._digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._digest.update(data)
        return self._raw.write(data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
