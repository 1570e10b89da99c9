"""The content-addressed artifact store: a file per sha256, written atomically."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from conveyor.releases.artifact import file_sha256

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactStore:
    """Artifacts kept under `<root>/sha256/<ab>/<digest>.tar.gz`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / f"{sha256}.tar.gz"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put(self, source: Path, sha256: str) -> Path:
        """Move a built artifact into the store, checking that it is what it claims."""
        actual = file_sha256(source)
        if actual != sha256:
            raise ValueError(f"artifact digest mismatch: expected {sha256}, got {actual}")
        dest = self.path_for(sha256)
        if dest.is_file():
            source.unlink(missing_ok=True)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(f".tmp{os.getpid()}")
        shutil.move(str(source), tmp)
        os.replace(tmp, dest)
        return dest
