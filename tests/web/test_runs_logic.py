"""The Run page's pure parts: commit links, where a log is cut, cursors, what abort does."""

from __future__ import annotations

from datetime import datetime

import pytest

from conveyor.protocol import DeploymentOut, RunOut, StepOut
from conveyor.server.web.logs import (
    char_end,
    format_cursor,
    line_start,
    parse_cursor,
    shown_end,
)
from conveyor.server.web.runs import abort_effect, commit_url

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("https://github.com/acme/shop.git", f"https://github.com/acme/shop/commit/{SHA}"),
        ("https://github.com/acme/shop", f"https://github.com/acme/shop/commit/{SHA}"),
        ("https://github.com/acme/shop/", f"https://github.com/acme/shop/commit/{SHA}"),
        ("  https://github.com/acme/shop.git\n", f"https://github.com/acme/shop/commit/{SHA}"),
        # credentials in a clone URL never reach a page
        (
            "https://bot:ghp_s3cret@github.com/acme/shop.git",
            f"https://github.com/acme/shop/commit/{SHA}",
        ),
        ("https://github.com/acme/shop?x=1#y", f"https://github.com/acme/shop/commit/{SHA}"),
        (
            "https://gitlab.com/group/sub/shop.git",
            f"https://gitlab.com/group/sub/shop/-/commit/{SHA}",
        ),
        (
            "https://gitlab.example.com:8443/g/shop",
            f"https://gitlab.example.com:8443/g/shop/-/commit/{SHA}",
        ),
        (
            "http://gitea.local:3000/acme/shop.git",
            f"http://gitea.local:3000/acme/shop/commit/{SHA}",
        ),
        ("https://codeberg.org/acme/shop.git", f"https://codeberg.org/acme/shop/commit/{SHA}"),
        ("https://bitbucket.org/acme/shop.git", f"https://bitbucket.org/acme/shop/commits/{SHA}"),
        ("http://[::1]:3000/acme/shop", f"http://[::1]:3000/acme/shop/commit/{SHA}"),
        # git's ssh forms: the same host serves the pages over https, not on the ssh port
        ("git@github.com:acme/shop.git", f"https://github.com/acme/shop/commit/{SHA}"),
        (
            "ssh://git@gitlab.com:2222/group/shop.git",
            f"https://gitlab.com/group/shop/-/commit/{SHA}",
        ),
        # no web page: local paths, file URLs, a host without owner/repo, odd schemes
        ("/srv/git/shop.git", None),
        ("./shop", None),
        ("file:///srv/git/shop.git", None),
        ("https://example.com/shop.git", None),
        ("https://github.com", None),
        ("https://github.com:notaport/acme/shop", None),
        ("javascript:alert(1)//github.com/acme/shop", None),
        ("ftp://github.com/acme/shop", None),
        ("", None),
    ],
)
def test_commit_url(repo: str, expected: str | None) -> None:
    assert commit_url(repo, SHA) == expected


@pytest.mark.parametrize("sha", ["", "main", "abc", "g123456789", "refs/heads/main"])
def test_no_commit_url_without_a_sha(sha: str) -> None:
    assert commit_url("https://github.com/acme/shop", sha) is None


def test_a_short_or_upper_case_sha_is_linked_as_lower_case() -> None:
    assert (
        commit_url("https://github.com/a/b", "ABCDEF1") == "https://github.com/a/b/commit/abcdef1"
    )


@pytest.mark.parametrize(
    ("data", "whole", "limit", "expected"),
    [
        (b"", False, 8, 0),
        (b"one\ntwo\n", False, 100, 8),
        (b"one\ntw", False, 100, 4),  # the step is writing "two": wait for its end
        (b"one\ntw", True, 100, 6),  # a finished step's last line has no end: all of it
        (b"no line end yet", False, 100, 0),
        (b"a line longer than a read", False, 8, 25),  # never stall on a huge line
        ("ab\u00e9".encode(), False, 3, 2),  # ...but never cut a character in two
    ],
)
def test_shown_end(data: bytes, whole: bool, limit: int, expected: int) -> None:
    assert shown_end(data, whole=whole, limit=limit) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"tail of a line\nnext\n", 15),
        (b"\nnext", 1),
        (b"no line end", 0),
        ("\u00e9t\u00e9".encode()[1:], 1),  # read from inside a character: skip its rest
    ],
)
def test_line_start(data: bytes, expected: int) -> None:
    assert line_start(data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"abc", 3), ("a\u00e9".encode(), 1), ("a\u00e9".encode()[:2], 1), ("\u20ac".encode(), 0)],
)
def test_char_end(data: bytes, expected: int) -> None:
    assert char_end(data) == expected


def test_cursors_round_trip_and_malformed_parts_are_left_out() -> None:
    offsets = {41: 1200, 42: 0, 7: 65536}
    assert parse_cursor(format_cursor(offsets)) == offsets
    assert format_cursor({}) == "" and parse_cursor("") == {}
    assert parse_cursor("41:12,x:3,42:-1,43,44:9") == {41: 12, 44: 9}


T = datetime(2026, 12, 3, 12, 0, 0)


def _run(state: str, steps: list[tuple[str, str, str]]) -> RunOut:
    return RunOut(
        id=7,
        app="shop",
        sha=SHA,
        ref="refs/heads/main",
        trigger="push",
        triggered_by="github",
        state=state,  # type: ignore[arg-type]
        reason=None,
        attempt=1,
        release=None,
        created_at=T,
        started_at=T,
        finished_at=None,
        duration=None,
        steps=[
            StepOut(
                id=i,
                attempt=1,
                position=i,
                kind=kind,
                name=name,
                command=None,
                state=st,  # type: ignore[arg-type]
                exit_code=None,
                reason=None,
                started_at=None,
                finished_at=None,
                duration=None,
            )
            for i, (kind, name, st) in enumerate(steps)
        ],
    )


def _deployment(state: str) -> DeploymentOut:
    return DeploymentOut(
        id=3,
        app="shop",
        environment="production",
        release="0123456-2",
        previous_release="fedcba9-1",
        run=7,
        kind="deploy",
        strategy="rolling",
        state=state,  # type: ignore[arg-type]
        reason=None,
        trigger="chain",
        triggered_by="",
        approved_by=None,
        approved_at=None,
        forced_by=None,
        force_reason=None,
        hosts=[],
        step=None,
        created_at=T,
        started_at=T,
        finished_at=None,
        duration=None,
    )


@pytest.mark.parametrize(
    ("run", "deployments", "expected"),
    [
        (_run("queued", []), [], "It has not started: it is cancelled and nothing runs."),
        (
            _run("running", [("checkout", "checkout", "succeeded"), ("test", "pytest", "running")]),
            [],
            "Its running step (test 'pytest') is stopped, the steps after it are skipped "
            "and no release is built.",
        ),
        (
            _run("succeeded", []),
            [_deployment("running")],
            "Deployment #3 of 0123456-2 to production stops, and its hosts go back to fedcba9-1.",
        ),
        (
            _run("succeeded", []),
            [_deployment("waiting")],
            "Deployment #3 to production is cancelled before it starts.",
        ),
    ],
)
def test_abort_says_what_it_will_do(
    run: RunOut, deployments: list[DeploymentOut], expected: str
) -> None:
    assert abort_effect(run, deployments) == expected
