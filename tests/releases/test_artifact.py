from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from conveyor.releases.artifact import ArtifactError, build_artifact, collect
from conveyor.releases.store import ArtifactStore


def _tree(root: Path) -> None:
    for name, text in {
        "app/server.py": "print(1)\n",
        "app/static/a.css": "body{}\n",
        "tests/test_a.py": "\n",
        "docs/x.md": "x\n",
        "run.sh": "#!/bin/sh\n",
        ".git/HEAD": "ref\n",
        "app/cache.pyc": "junk",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "run.sh").chmod(0o755)
    os.symlink("app/server.py", root / "link.py")


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (
            ["."],
            [],
            {
                "app",
                "app/server.py",
                "app/static",
                "app/static/a.css",
                "app/cache.pyc",
                "tests",
                "tests/test_a.py",
                "docs",
                "docs/x.md",
                "run.sh",
                "link.py",
            },
        ),
        (
            ["."],
            ["tests/", "*.pyc", "docs"],
            {"app", "app/server.py", "app/static", "app/static/a.css", "run.sh", "link.py"},
        ),
        (["app", "run.sh"], ["app/static/"], {"app", "app/server.py", "app/cache.pyc", "run.sh"}),
        (["app/static/a.css"], [], {"app", "app/static", "app/static/a.css"}),
    ],
)
def test_collect_applies_include_and_exclude(
    tmp_path: Path, include: list[str], exclude: list[str], expected: set[str]
) -> None:
    _tree(tmp_path)
    assert {p.as_posix() for p in collect(tmp_path, include, exclude)} == expected


def test_same_tree_gives_same_bytes_whatever_the_mtimes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _tree(a)
    _tree(b)
    os.utime(b / "app/server.py", (1, 1))
    one = build_artifact(a, ["."], [], tmp_path / "one.tar.gz")
    two = build_artifact(b, ["."], [], tmp_path / "two.tar.gz")
    assert one.sha256 == two.sha256
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    (b / "app/server.py").write_text("print(2)\n")
    three = build_artifact(b, ["."], [], tmp_path / "three.tar.gz")
    assert three.sha256 != one.sha256
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["run.sh"].mode == 0o755 and members["app/server.py"].mode == 0o644
    assert members["link.py"].issym() and members["link.py"].linkname == "app/server.py"
    assert all(m.uid == 0 and m.mtime == members["run.sh"].mtime for m in members.values())


def test_include_outside_or_missing_is_an_error(tmp_path: Path) -> None:
    _tree(tmp_path)
    with pytest.raises(ArtifactError, match="outside"):
        collect(tmp_path, ["../etc"], [])
    with pytest.raises(ArtifactError, match="does not exist"):
        collect(tmp_path, ["nope"], [])


def test_store_is_content_addressed_and_checks_digests(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    built = build_artifact(src, ["."], [], tmp_path / "x.tar.gz")
    store = ArtifactStore(tmp_path / "store")
    path = store.put(built.path, built.sha256)
    assert path.name == f"{built.sha256}.tar.gz" and store.has(built.sha256)
    other = build_artifact(src, ["app"], [], tmp_path / "y.tar.gz")
    with pytest.raises(ValueError, match="mismatch"):
        store.put(other.path, built.sha256)
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
