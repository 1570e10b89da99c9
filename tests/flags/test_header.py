"""One request's flags as a header: the user read from a cookie or header, each flag's answer."""

from __future__ import annotations

import pytest

from conveyor.flags import Context, FlagSet
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.flags.header import RequestFlags, header_value, parse_source
from conveyor.protocol.flags import FlagState, FlagVariant


@pytest.mark.parametrize("source", ["uid", "cookie:", "query:uid", ":uid"])
def test_parse_source_refuses(source: str) -> None:
    with pytest.raises(ValueError, match="expected cookie:NAME or header:NAME"):
        parse_source(source)


def test_header_value_names_every_flag() -> None:
    flags = FlagSet(
        to_document(
            [
                NamedFlag("new-checkout", "", FlagState(enabled=True)),
                NamedFlag("dark", "", FlagState()),
                NamedFlag(
                    "search",
                    "",
                    FlagState(
                        enabled=True,
                        variants=[FlagVariant(name="variant-b", weight=100)],
                    ),
                ),
            ]
        )
    )
    value = header_value(flags, Context(user_id="u-1"))
    assert value == "dark=off; new-checkout=on; search=variant-b"


@pytest.mark.parametrize(
    ("source", "headers", "cookie", "user"),
    [
        ("cookie:uid", [], b"theme=dark; uid=u-1", "u-1"),
        ("cookie:uid", [], b"myuid=u-2", None),
        ("cookie:uid", [], b'uid="u-3"; a=b', "u-3"),
        ("cookie:uid", [], None, None),
        ("header:X-User", [(b"X-USER", b" u-4 ")], None, "u-4"),
        ("header:X-User", [(b"X-Other", b"u-4")], b"X-User=u-5", None),
    ],
)
def test_the_routers_reading_of_the_user(
    source: str, headers: list[tuple[bytes, bytes]], cookie: bytes | None, user: str | None
) -> None:
    flags = RequestFlags(source, FlagSet(to_document([])))
    assert flags.user(headers, cookie) == user


def test_the_routers_header_line() -> None:
    flags = RequestFlags(
        "cookie:uid", FlagSet(to_document([NamedFlag("a", "", FlagState(enabled=True))]))
    )
    assert flags.line([], b"uid=1") == b"X-Conveyor-Flags: a=on\r\n"


# a rollout of users whose id starts with "u": answered in Python (flags/_line.c takes no
# constraint), which keeps its users' answers
IN_PYTHON = FlagState.model_validate(
    {
        "enabled": True,
        "rollout": 50,
        "constraints": [{"context_name": "userId", "operator": "STR_STARTS_WITH", "values": ["u"]}],
    }
)


def test_a_users_line_is_kept_unless_a_constraint_reads_the_clock() -> None:
    plain = RequestFlags("cookie:uid", FlagSet(to_document([NamedFlag("a", "", IN_PYTHON)])))
    assert plain._native is None
    assert plain.line([], b"uid=1") is plain.line([], b"uid=1")
    dated = FlagState.model_validate(
        {
            "enabled": True,
            "constraints": [
                {
                    "context_name": "currentTime",
                    "operator": "DATE_AFTER",
                    "values": ["2020-01-01T00:00:00Z"],
                }
            ],
        }
    )
    clocked = RequestFlags("cookie:uid", FlagSet(to_document([NamedFlag("a", "", dated)])))
    assert not clocked.cacheable
    assert clocked.line([], b"uid=1") == b"X-Conveyor-Flags: a=on\r\n"


def test_a_cookie_header_kept_answers_for_its_own_user_only() -> None:
    half = IN_PYTHON
    flags = RequestFlags("cookie:uid", FlagSet(to_document([NamedFlag("half", "", half)])))
    full = FlagSet(to_document([NamedFlag("half", "", half)]))
    for _ in range(3):  # seen once, then kept by user, then by the whole Cookie header
        for i in range(200):
            for cookie in (f"uid=u-{i}".encode(), f"theme=dark; uid=u-{i}; x={i % 7}".encode()):
                expected = f"X-Conveyor-Flags: {header_value(full, Context(user_id=f'u-{i}'))}"
                assert flags.line([], cookie) == f"{expected}\r\n".encode(), cookie
    assert 0 < len(flags._cookies) <= 400
    # a Cookie header without the user is never kept (the SDKs' random stickiness)
    flags.line([], b"theme=dark")
    flags.line([], b"theme=dark")
    assert b"theme=dark" not in flags._cookies


def test_a_huge_user_id_is_answered_but_never_kept() -> None:
    half = IN_PYTHON
    flags = RequestFlags("cookie:uid", FlagSet(to_document([NamedFlag("half", "", half)])))
    full = FlagSet(to_document([NamedFlag("half", "", half)]))
    for i in range(3):
        uid = f"u-{i}-" + "x" * 300
        expected = f"X-Conveyor-Flags: {header_value(full, Context(user_id=uid))}\r\n"
        assert flags.line([], f"uid={uid}".encode()) == expected.encode()
        assert flags.line([], f"uid={uid}".encode()) == expected.encode()
    assert not flags._lines and not flags._cookies


class _Seen:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def observe(self, status: int, latency: float) -> None:
        self.statuses.append(status)


def test_a_request_gets_the_counters_of_its_guarded_flags_answers_only() -> None:
    document = to_document(
        [
            NamedFlag("new-checkout", "", FlagState(enabled=True, rollout=50)),
            NamedFlag("search", "", FlagState(enabled=True)),
        ]
    )
    made: dict[str, _Seen] = {}

    def counters(answer: str) -> _Seen:
        return made.setdefault(answer, _Seen())

    flags = RequestFlags("cookie:uid", FlagSet(document), ["new-checkout"], counters)
    answers = set()
    for i in range(40):
        line, counted = flags.answer([], f"uid=u-{i}".encode())
        assert line.startswith(b"X-Conveyor-Flags: new-checkout=")
        assert len(counted) == 1  # search is not guarded: not counted
        again = flags.answer([], f"uid=u-{i}".encode())
        assert again[1][0] is counted[0]  # kept with the user's line
        answers.add(next(a for a, c in made.items() if c is counted[0]))
    assert answers == {"new-checkout=on", "new-checkout=off"}
    # no guarded flag: nothing to count
    plain = RequestFlags("cookie:uid", FlagSet(document))
    assert plain.answer([], b"uid=u-1")[1] == ()
