from __future__ import annotations

import pytest

from conveyor.pipeline.masking import Masker


@pytest.mark.parametrize(
    ("secrets", "text", "expected"),
    [
        ([], "nothing to hide", "nothing to hide"),
        (["hunter22"], "pw=hunter22!", "pw=***!"),
        (["abcd", "abcdef"], "abcdef abcd", "*** ***"),  # longest first, no leftover "ef"
        (["a.b*c"], "x a.b*c y", "x *** y"),  # regex characters are literal
        (["abc"], "abc", "abc"),  # too short to mask safely; refused when stored
        (["line-one\nline-two"], "line-two only", "*** only"),
    ],
)
def test_masker(secrets: list[str], text: str, expected: str) -> None:
    assert Masker(secrets)(text) == expected
