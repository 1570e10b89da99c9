from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from conveyor.agent.installer import Installer, InstallError
from conveyor.agent.records import STATE_FILE
from conveyor.agent.unpack import member_problem
from tests.agent.conftest import (
    GOOD_ENTRIES,
    Entry,
    HttpServer,
    Route,
    directory,
    file,
    hardlink,
    make_tarball,
    symlink,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# -- download ---------------------------------------------------------------------------


async def test_download_verifies_and_moves_into_place(
    data: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    body = os.urandom(300_000)
    http_server.routes["/a.tar.gz"] = Route(body=body, require={"Authorization": "Bearer t"})
    dest = tmp_path / "dl" / "a.tar.gz"
    got = await Installer(data).download(
        http_server.url("/a.tar.gz"), {"Authorization": "Bearer t"}, dest, sha(body)
    )
    assert got == dest
    assert dest.read_bytes() == body
    assert listing(dest.parent) == ["a.tar.gz"]


async def test_download_refuses_a_checksum_mismatch(
    data: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    http_server.routes["/a.tar.gz"] = Route(body=b"tampered bytes")
    dest = tmp_path / "dl" / "a.tar.gz"
    expected = sha(b"the real bytes")
    with pytest.raises(InstallError) as info:
        await Installer(data).download(http_server.url("/a.tar.gz"), {}, dest, expected)
    message = str(info.value)
    assert message.startswith(
        f"checksum mismatch: expected {expected}, got {sha(b'tampered bytes')}"
    )
    assert http_server.url("/a.tar.gz") in message
    assert listing(dest.parent) == []


async def test_download_refuses_a_truncated_body(
    data: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    body = os.urandom(100_000)
    http_server.routes["/a.tar.gz"] = Route(body=body, truncate_to=40_000)
    dest = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises(InstallError, match=r"download of .*/a\.tar\.gz (failed|is truncated)"):
        await Installer(data).download(http_server.url("/a.tar.gz"), {}, dest, sha(body))
    assert listing(dest.parent) == []


async def test_download_tries_again_when_the_server_hangs_up_before_answering(
    data: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    body = os.urandom(100_000)
    answers = iter([Route(hang_up=True), Route(hang_up=True), Route(body=body)])
    http_server.routes["/a.tar.gz"] = lambda: next(answers)
    dest = tmp_path / "dl" / "a.tar.gz"
    await Installer(data).download(http_server.url("/a.tar.gz"), {}, dest, sha(body))
    assert dest.read_bytes() == body
    assert http_server.hits == ["/a.tar.gz"] * 3

    http_server.routes["/gone.tar.gz"] = Route(hang_up=True)
    with pytest.raises(InstallError, match=r"failed after 0 bytes: RemoteProtocolError"):
        await Installer(data).download(http_server.url("/gone.tar.gz"), {}, dest, sha(body))
    assert http_server.hits.count("/gone.tar.gz") == 3


async def test_download_reports_http_errors(
    data: Path, tmp_path: Path, http_server: HttpServer
) -> None:
    http_server.routes["/secret.tar.gz"] = Route(body=b"x", require={"Authorization": "Bearer t"})
    dest = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises(InstallError, match="failed: HTTP 401"):
        await Installer(data).download(http_server.url("/secret.tar.gz"), {}, dest, sha(b"x"))
    with pytest.raises(InstallError, match="failed: HTTP 404"):
        await Installer(data).download(http_server.url("/nothing"), {}, dest, sha(b"x"))
    with pytest.raises(InstallError, match="not a sha256"):
        await Installer(data).download(http_server.url("/nothing"), {}, dest, "abc")
    assert listing(dest.parent) == []


# -- unpack -----------------------------------------------------------------------------


def test_unpack_lays_out_the_release_with_its_shared_link(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    release = installer.unpack("shop", "abc1234-1", good_tarball)
    assert release == data / "shop" / "releases" / "abc1234-1"
    assert (release / "app" / "server.py").read_text() == "print('hello')\n"
    assert os.access(release / "bin" / "install", os.X_OK)
    assert os.readlink(release / "server.py") == "app/server.py"
    assert os.stat(release / "app" / "copy.py").st_ino == os.stat(release / "app/server.py").st_ino
    # <release>/shared -> <data>/<app>/shared, relative so the data directory can move
    assert os.readlink(release / "shared") == "../../shared"
    assert (release / "shared").resolve() == (data / "shop" / "shared").resolve()
    (data / "shop" / "shared" / "uploads").mkdir()
    (release / "uploads" / "kept.txt").write_text("across releases")
    assert (data / "shop" / "shared" / "uploads" / "kept.txt").exists()
    assert listing(data / "shop" / "releases") == ["abc1234-1"]
    assert installer.is_installed("shop", "abc1234-1")
    state = json.loads((data / STATE_FILE).read_text())
    assert state["releases"]["shop"]["abc1234-1"]["sha256"] == sha(good_tarball.read_bytes())


def test_unpack_is_idempotent(data: Path, good_tarball: Path, tmp_path: Path) -> None:
    installer = Installer(data)
    first = installer.unpack("shop", "abc1234-1", good_tarball)
    (first / "marker").write_text("from the first unpack")
    inode = first.stat().st_ino
    again = installer.unpack("shop", "abc1234-1", good_tarball)
    assert again == first
    assert again.stat().st_ino == inode
    assert (again / "marker").exists()
    # the same id with other bytes is not the same release
    other = make_tarball(tmp_path / "other.tar.gz", [file("x.txt", b"other")])
    with pytest.raises(InstallError, match=r"already installed .* from another artifact"):
        installer.unpack("shop", "abc1234-1", other)


MALICIOUS: list[tuple[str, list[Entry], str, str]] = [
    ("dotdot", [file("../x")], "../x", "has a '..' component"),
    ("dotdot-inside", [file("app/../../x")], "app/../../x", "has a '..' component"),
    ("absolute", [file("/etc/x")], "/etc/x", "has an absolute path"),
    ("symlink-abs", [symlink("etc", "/etc")], "etc", "is a symlink to '/etc', outside"),
    (
        "symlink-up",
        [directory("a"), symlink("a/up", "../../outside")],
        "a/up",
        "is a symlink to '../../outside', outside",
    ),
    (
        "hardlink-outside",
        [hardlink("passwd", "../../../etc/passwd")],
        "passwd",
        "is a hard link to '../../../etc/passwd', outside",
    ),
    (
        "hardlink-abs",
        [hardlink("passwd", "/etc/passwd")],
        "passwd",
        "is a hard link to '/etc/passwd', outside",
    ),
    (
        "hardlink-to-symlink",
        [symlink("l", "app"), directory("app"), hardlink("h", "l")],
        "h",
        "not a file earlier in the archive",
    ),
    ("fifo", [Entry("pipe", tarfile.FIFOTYPE)], "pipe", "is a FIFO"),
    ("chardev", [Entry("null", tarfile.CHRTYPE)], "null", "is a device file"),
    ("blockdev", [Entry("sda", tarfile.BLKTYPE)], "sda", "is a device file"),
    ("setuid", [file("su", mode=0o4755)], "su", "has the setuid bit"),
    ("setgid", [file("sg", mode=0o2755)], "sg", "has the setgid bit"),
    (
        "through-symlink",
        [directory("real"), symlink("alias", "real"), file("alias/x")],
        "alias/x",
        "lies under the symlink 'alias'",
    ),
    # lexically inside, but `b -> .` makes `b/..` the parent of the release: only the
    # check of the extracted tree sees it (tarfile's filter misses it in this order)
    (
        "symlink-chain",
        [symlink("a", "b/.."), symlink("b", ".")],
        "a",
        "resolves outside the release directory",
    ),
    ("shared-in-the-way", [file("shared")], "shared", "is in the way"),
]


@pytest.mark.parametrize(
    ("entries", "member", "reason"),
    [case[1:] for case in MALICIOUS],
    ids=[case[0] for case in MALICIOUS],
)
def test_unpack_refuses_malicious_members(
    data: Path, tmp_path: Path, entries: list[Entry], member: str, reason: str
) -> None:
    archive = make_tarball(tmp_path / "evil.tar.gz", [*GOOD_ENTRIES, *entries])
    with pytest.raises(InstallError) as info:
        Installer(data).unpack("shop", "abc1234-1", archive)
    message = str(info.value)
    assert f"member {member!r}" in message
    assert reason in message
    assert message.startswith("evil.tar.gz: ")
    # nothing left behind: no release, no temporary directory, nothing outside
    assert listing(data / "shop" / "releases") == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


def test_unpack_refuses_a_truncated_archive(data: Path, tmp_path: Path) -> None:
    full = make_tarball(
        tmp_path / "full.tar.gz", [file(f"f{i}", os.urandom(20_000)) for i in range(5)]
    )
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InstallError, match=r"cut\.tar\.gz: the archive is truncated"):
        Installer(data).unpack("shop", "abc1234-1", cut)
    assert listing(data / "shop" / "releases") == []
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip at all")
    with pytest.raises(InstallError, match=r"junk\.tar\.gz: the archive is truncated or is not"):
        Installer(data).unpack("shop", "abc1234-1", junk)
    assert listing(data / "shop" / "releases") == []


@pytest.mark.parametrize("release", ["../evil", "a/b", ".hidden", "", "x..y"])
def test_release_ids_must_be_plain_names(data: Path, good_tarball: Path, release: str) -> None:
    with pytest.raises(InstallError, match="invalid release id"):
        Installer(data).unpack("shop", release, good_tarball)


def test_leftovers_of_an_interrupted_unpack_are_removed(data: Path, good_tarball: Path) -> None:
    releases = data / "shop" / "releases"
    (releases / ".unpack-old-999999999-abc").mkdir(parents=True)
    (releases / ".trash-gone-abc" / "sub").mkdir(parents=True)
    Installer(data).unpack("shop", "abc1234-1", good_tarball)
    assert listing(releases) == ["abc1234-1"]


@pytest.mark.parametrize(
    ("member", "symlinks", "files", "expected"),
    [
        (file("app/a.py"), set(), set(), None),
        (file("./app/a.py"), set(), set(), None),
        (directory("."), set(), set(), None),
        (symlink("a/b", "../c"), set(), set(), None),
        (symlink("a/b", "../../c"), set(), set(), "outside the release directory"),
        (symlink("l", ""), set(), set(), "outside the release directory"),
        (hardlink("h", "./app/a.py"), set(), {"app/a.py"}, None),
        (hardlink("h", "app/b.py"), set(), {"app/a.py"}, "not a file earlier"),
        (hardlink("h", "l/a.py"), {"l"}, {"l/a.py"}, "through the symlink 'l'"),
        (symlink(".", "x"), set(), set(), "would replace the release directory"),
        (file("a\0b"), set(), set(), "invalid name"),
        (Entry("v", b"V"), set(), set(), "unsupported type"),
    ],
)
def test_member_problem(
    member: Entry, symlinks: set[str], files: set[str], expected: str | None
) -> None:
    info = tarfile.TarInfo(member.name)
    info.type, info.mode, info.linkname = member.type, member.mode, member.linkname
    problem = member_problem(info, symlinks, files)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem


# -- hooks ------------------------------------------------------------------------------


async def test_install_hook_runs_in_the_release_dir(
    data: Path, good_tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", "agent-secret")
    installer = Installer(data)
    release = installer.unpack("shop", "abc1234-1", good_tarball)
    log_path = data / "shop" / "logs" / "abc1234-1-install.log"
    await installer.run_hook(
        './bin/install && echo "$GREETING token=${CONVEYOR_TOKEN:-none}"',
        release,
        {"GREETING": "hello"},
        log_path,
        timeout=10,
    )
    assert (release / "installed.txt").read_text() == "installed\n"
    assert "hello token=none" in log_path.read_text()


async def test_install_hook_failure_says_why(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    release = installer.unpack("shop", "abc1234-1", good_tarball)
    log_path = data / "shop" / "logs" / "abc1234-1-install.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("old line from an earlier attempt\n")
    with pytest.raises(InstallError) as info:
        await installer.run_hook(
            "echo compiling; echo 'missing libfoo' >&2; exit 3", release, {}, log_path, 10
        )
    message = str(info.value)
    assert "install hook `echo compiling;" in message
    assert "exited with code 3" in message
    assert str(release) in message
    assert "compiling" in message and "missing libfoo" in message
    assert "old line" not in message


async def test_install_hook_timeout_kills_it(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    release = installer.unpack("shop", "abc1234-1", good_tarball)
    started = time.monotonic()
    with pytest.raises(InstallError, match=r"timed out after 0.5s"):
        await installer.run_hook(
            "echo waiting; sleep 30", release, {}, data / "hook.log", timeout=0.5, name="migrate"
        )
    assert time.monotonic() - started < 5


# -- current ----------------------------------------------------------------------------


def test_switch_current_never_leaves_it_missing(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    for release in ("r1", "r2"):
        installer.unpack("shop", release, good_tarball)
    installer.switch_current("shop", "r1")
    link = installer.current_link("shop")
    stop = threading.Event()
    seen: set[str] = set()
    misses: list[BaseException] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                seen.add(os.readlink(link))
                (link / "app" / "server.py").stat()
            except OSError as exc:
                misses.append(exc)
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(400):
            installer.switch_current("shop", "r2" if i % 2 == 0 else "r1")
    finally:
        stop.set()
        thread.join()
    assert misses == []
    assert reads > 100
    assert seen == {"releases/r1", "releases/r2"}
    assert installer.current("shop") == "r1"
    assert sorted(p.name for p in (data / "shop").iterdir()) == ["current", "releases", "shared"]
    with pytest.raises(InstallError, match="r9 is not installed"):
        installer.switch_current("shop", "r9")


# -- prune ------------------------------------------------------------------------------


def test_prune_keeps_five_and_those_in_use(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    names = [f"r{i}" for i in range(8)]
    for name in names:
        installer.unpack("shop", name, good_tarball)
        installer.archive_path("shop", name).parent.mkdir(parents=True, exist_ok=True)
        installer.archive_path("shop", name).write_bytes(b"x")
        logs = data / "shop" / "logs"
        logs.mkdir(exist_ok=True)
        for log_name in (
            f"{name}-install.log",
            f"{name}-20001.log",
            f"{name}-migrate-deployment-7.log",
            f"{name}-x-2.log",
        ):
            (logs / log_name).write_text("log")
        time.sleep(0.002)
    assert installer.releases("shop") == names[::-1]
    installer.switch_current("shop", "r1")
    removed = installer.prune("shop", keep=5, in_use={"r0"})
    assert removed == ["r2"]
    assert listing(data / "shop" / "releases") == ["r0", "r1", "r3", "r4", "r5", "r6", "r7"]
    assert not installer.archive_path("shop", "r2").exists()
    assert installer.archive_path("shop", "r3").exists()
    assert not (data / "shop" / "logs" / "r2-install.log").exists()
    assert not (data / "shop" / "logs" / "r2-20001.log").exists()
    assert not (data / "shop" / "logs" / "r2-migrate-deployment-7.log").exists()
    assert (data / "shop" / "logs" / "r2-x-2.log").exists()  # another release's
    assert (data / "shop" / "logs" / "r3-20001.log").exists()
    state = json.loads((data / STATE_FILE).read_text())
    assert sorted(state["releases"]["shop"]) == ["r0", "r1", "r3", "r4", "r5", "r6", "r7"]
    assert installer.prune("shop", keep=5, in_use={"r0"}) == []


def test_prune_falls_back_to_mtimes(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    for i, name in enumerate(["old", "mid", "new"]):
        path = installer.unpack("shop", name, good_tarball)
        os.utime(path, (1000 + i, 1000 + i), follow_symlinks=False)
    (data / STATE_FILE).unlink()  # e.g. a host restored from a backup without its record
    assert installer.prune("shop", keep=1) == ["mid", "old"]
    assert listing(data / "shop" / "releases") == ["new"]


def test_prune_removes_read_only_trees(data: Path, good_tarball: Path) -> None:
    installer = Installer(data)
    for name in ("a", "b"):
        path = installer.unpack("shop", name, good_tarball)
        (path / "app").chmod(stat.S_IRUSR | stat.S_IXUSR)
        time.sleep(0.002)
    assert installer.prune("shop", keep=1) == ["a"]
    assert listing(data / "shop" / "releases") == ["b"]
