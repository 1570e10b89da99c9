"""One request's flags as a header: the user read from a cookie or header, each flag's answer."""

from __future__ import annotations

import pytest

from conveyor.flags import Context, FlagSet
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.flags.header import header_value, parse_source, request_context
from conveyor.protocol.flags import FlagState, FlagVariant


@pytest.mark.parametrize(
    ("source", "headers", "user"),
    [
        ("cookie:uid", [("Cookie", "a=1; uid=u-42")], "u-42"),
        ("cookie:uid", [("cookie", "a=1")], None),
        ("cookie:uid", [("Cookie", "a=1"), ("Cookie", "uid=u-7")], "u-7"),
        ("cookie:uid", [("Cookie", 'uid="broken')], None),
        ("header:X-User", [("x-user", " u-9 ")], "u-9"),
        ("header:X-User", [("X-Other", "u-9")], None),
    ],
)
def test_request_context(source: str, headers: list[tuple[str, str]], user: str | None) -> None:
    assert request_context(source, headers).user_id == user


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
