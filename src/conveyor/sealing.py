"""Secrets at rest: a key file (0600) and `cryptography`'s Fernet, nothing home-made.

Both wings use it: the server seals the secret store in its database with
`<data>/secrets.key`, an agent seals the env of its instances in its state file with
`<data>/agent.key`. A key file holds Fernet keys, one a line, the newest first: values
are sealed with the first and opened with any (MultiFernet), which is how a rotation
re-encrypts everything without a moment where a value cannot be opened.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "KeyFileError", "Sealer", "create_key_file", "read_keys"]

KEY_MODE = 0o600


class KeyFileError(Exception):
    """A key file is missing, unreadable, readable by others or not a key file."""


def read_keys(path: Path) -> list[bytes]:
    """The keys of a key file, newest first (errors name the file, never a key)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text("ascii")
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} is unreadable: {exc.__class__.__name__}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} is readable by others (mode {oct(mode)}); "
            f"expected 0600: chmod 600 {path}"
        )
    keys = [line.strip().encode() for line in text.splitlines() if line.strip()]
    if not keys:
        raise KeyFileError(f"key file {path} holds no key")
    for i, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise KeyFileError(
                f"key file {path}, line {i}: not a Fernet key (32 url-safe base64 bytes)"
            ) from None
    return keys


def write_keys(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically (0600 from its first byte)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, KEY_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(k + b"\n" for k in keys))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_key_file(path: Path) -> bool:
    """Create the key file with one new key unless it exists; True when created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(Fernet.generate_key() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


class Sealer:
    """Seals and opens text with the keys of one key file (thread-safe)."""

    def __init__(self, path: Path, keys: list[bytes] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys = keys if keys is not None else read_keys(path)
        self._fernet = MultiFernet([Fernet(k) for k in self._keys])

    @classmethod
    def open_or_create(cls, path: Path) -> Sealer:
        create_key_file(path)
        return cls(path)

    def seal(self, text: str) -> str:
        with self._lock:
            return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        """The text sealed in token; InvalidToken when no key of the file opens it."""
        with self._lock:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")

    def reseal(self, token: str) -> str:
        """The same text sealed with the newest key."""
        with self._lock:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")

    def use(self, keys: list[bytes]) -> None:
        """Write keys to the key file and seal with the first of them from now on."""
        with self._lock:
            write_keys(self.path, keys)
            self._keys = list(keys)
            self._fernet = MultiFernet([Fernet(k) for k in keys])

    @property
    def keys(self) -> list[bytes]:
        with self._lock:
            return list(self._keys)

    @staticmethod
    def new_key() -> bytes:
        return Fernet.generate_key()
