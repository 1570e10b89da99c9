"""Step logs with ANSI colours become escaped HTML that shows what a terminal would have."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from conveyor.server.web.ansi import ANSI_CSS, to_html

E = "\x1b"

CASES: list[tuple[str, str, str]] = [
    # (name, log text, HTML)
    ("plain text", "hello world", "hello world"),
    ("empty", "", ""),
    ("escaped", "a < b && c > \"d\" 'e'", "a &lt; b &amp;&amp; c &gt; &quot;d&quot; &#x27;e&#x27;"),
    (
        "a hostile script inside coloured text",
        f"{E}[31m<script>alert(1)</script>{E}[0m",
        '<span class="ansi-fg-31">&lt;script&gt;alert(1)&lt;/script&gt;</span>',
    ),
    ("red then reset", f"{E}[31mred{E}[0m plain", '<span class="ansi-fg-31">red</span> plain'),
    ("ESC[m resets", f"{E}[32mok{E}[m.", '<span class="ansi-fg-32">ok</span>.'),
    (
        "bold, dim, italic, underline together",
        f"{E}[1;2;3;4mx",
        '<span class="ansi-bold ansi-dim ansi-italic ansi-underline">x</span>',
    ),
    (
        "22, 23, 24 end them one by one",
        f"{E}[1;3;4ma{E}[22mb{E}[23mc{E}[24md",
        '<span class="ansi-bold ansi-italic ansi-underline">a</span>'
        '<span class="ansi-italic ansi-underline">b</span>'
        '<span class="ansi-underline">c</span>d',
    ),
    (
        "bright foreground and background",
        f"{E}[97;104mx{E}[39my{E}[49mz",
        '<span class="ansi-fg-97 ansi-bg-104">x</span><span class="ansi-bg-104">y</span>z',
    ),
    (
        "a colour change closes the span and opens another",
        f"{E}[31ma{E}[32mb",
        '<span class="ansi-fg-31">a</span><span class="ansi-fg-32">b</span>',
    ),
    (
        "the same style twice is one span",
        f"{E}[31ma{E}[31mb{E}[1m{E}[22mc",
        '<span class="ansi-fg-31">abc</span>',
    ),
    (
        "bold keeps its colour",
        f"{E}[1m{E}[33mwarn{E}[22m:{E}[0m",
        '<span class="ansi-bold ansi-fg-33">warn</span><span class="ansi-fg-33">:</span>',
    ),
    (
        "256 colours: 0-15 are the classes, the rest inline",
        f"{E}[38;5;1ma{E}[38;5;9mb{E}[38;5;196mc{E}[48;5;244md",
        '<span class="ansi-fg-31">a</span><span class="ansi-fg-91">b</span>'
        '<span style="color:#ff0000">c</span>'
        '<span style="color:#ff0000;background-color:#808080">d</span>',
    ),
    (
        "24-bit colour, with codes after it",
        f"{E}[38;2;10;20;30;1mx",
        '<span class="ansi-bold" style="color:#0a141e">x</span>',
    ),
    (
        "colon sub-parameters",
        f"{E}[38:2::255:128:0mx{E}[0;48:5:2my",
        '<span style="color:#ff8000">x</span><span class="ansi-bg-42">y</span>',
    ),
    (
        "a curly underline (4:3) is an underline, not italic",
        f"{E}[4:3mx",
        '<span class="ansi-underline">x</span>',
    ),
    (
        "a malformed extended colour ignores the rest",
        f"{E}[38;5;300;1mx{E}[38;2;1;2mY",
        "xY",
    ),
    ("unknown codes show nothing", f"{E}[5;7;9mx", "x"),
    (
        "a style goes on across lines, each line closing its spans",
        f"{E}[31mone\ntwo{E}[0m\nthree",
        '<span class="ansi-fg-31">one</span>\n<span class="ansi-fg-31">two</span>\nthree',
    ),
    ("an unterminated sequence at the end", f"tail {E}[31", "tail "),
    (
        "an unterminated sequence cut by another",
        f"a{E}[1;3{E}[32mb",
        'a<span class="ansi-fg-32">b</span>',
    ),
    ("a lone ESC", f"a{E}", "a"),
    (
        "cursor moves and erasing dropped",
        f"{E}[2K{E}[1G{E}[?25lx{E}[3A{E}[?25h",
        "x",
    ),
    ("a title (OSC) dropped", f"{E}]0;my title\x07shown", "shown"),
    (
        "a hyperlink (OSC 8) keeps its text",
        f"{E}]8;;https://example.com{E}\\link{E}]8;;{E}\\",
        "link",
    ),
    ("an unterminated OSC swallows its line only", f"a{E}]0;ti\nb", "a\nb"),
    ("character set escapes dropped", f"{E}(Bx{E}7{E}8{E}=", "x"),
    ("progress: what comes after the last \\r", "10%\r50%\r100%\nnext", "100%\nnext"),
    ("a \\r\\n line ending", "one\r\ntwo\r\n", "one\ntwo\n"),
    ("a trailing \\r overwrote nothing yet", "50%\r", "50%"),
    (
        "a style set in an overwritten piece still applies",
        f"{E}[32m10%\r{E}[1m100%",
        '<span class="ansi-bold ansi-fg-32">100%</span>',
    ),
    ("other control characters dropped", "a\x07b\x08c\x00d\x7f\te", "abcd\te"),
    ("a huge parameter", f"{E}[{'9' * 5000}mx", "x"),
    ("a trailing newline kept", "a\n", "a\n"),
]


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_to_html(name: str, text: str, expected: str) -> None:
    assert to_html(text) == expected


@pytest.mark.parametrize("text", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_html_is_balanced_and_has_no_escape_left(text: str) -> None:
    out = to_html(text)
    assert E not in out and "\r" not in out
    assert "<script" not in out
    ET.fromstring(f"<pre>{out}</pre>")  # balanced spans, nothing unescaped
    for line in out.split("\n"):
        ET.fromstring(f"<pre>{line}</pre>")  # each line stands alone too


def test_the_css_has_a_rule_for_every_class_written() -> None:
    for code in [*range(30, 38), *range(90, 98)]:
        assert f".ansi-fg-{code} {{" in ANSI_CSS
        assert f".ansi-bg-{code + 10} {{" in ANSI_CSS
    for name in ("bold", "dim", "italic", "underline"):
        assert f".ansi-{name} {{" in ANSI_CSS
    assert len(re.findall(r"\{", ANSI_CSS)) == 4 + 32
