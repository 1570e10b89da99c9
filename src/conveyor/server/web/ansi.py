"""Step logs as HTML: escaped text with its ANSI colours, as a terminal would have shown it.

Build tools colour their output (pytest, npm, cargo) and draw progress lines with `\\r`.
`to_html` keeps the SGR styling as `<span>`s (classes for the 16 colours, so the page's
stylesheet chooses them; inline styles only for 256-colour and RGB values, which no
stylesheet could list), keeps of each line what a terminal would finally show, and drops
every other escape sequence (cursor moves, erasing, titles, hyperlinks). Spans never cross
a line: each run of text is wrapped on its own, so a truncated or unterminated log still
gives balanced HTML, and any line can be shown alone.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

__all__ = ["ANSI_CSS", "to_html"]

# One token of a line: a complete or broken escape sequence, a carriage return, or another
# control character. Lines are split on "\n" first, so nothing here spans lines.
_TOKEN = re.compile(
    r"""
      \x1b\[ (?P<params>[0-?]*) (?P<inter>[\x20-/]*) (?P<final>[@-~])  # CSI, e.g. ESC[1;31m
    | \x1b\[ [0-?]* [\x20-/]*                # a CSI cut short (by the end or another ESC)
    | \x1b[\]PX^_] .*? (?:\x07|\x1b\\|\Z)    # OSC, DCS, SOS, PM, APC: up to their terminator
    | \x1b [\x20-/]* [0-~]                   # the short escapes: ESC(B, ESC7, ESC=, ESCM …
    | \x1b
    | (?P<cr>\r)
    | [\x00-\x08\x0b-\x1f\x7f]               # BEL, backspace …: nothing to show
    """,
    re.VERBOSE | re.DOTALL,
)
_SGR_PARAMS = re.compile(r"[0-9;:]*")

Colour = int | str | None  # an SGR code (31, 94, …) that has a class, a "#rrggbb", or default


@dataclass(frozen=True)
class _Style:
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    fg: Colour = None
    bg: Colour = None

    def attributes(self) -> str:
        flags = ("bold", self.bold), ("dim", self.dim), ("italic", self.italic)
        classes = [f"ansi-{name}" for name, on in (*flags, ("underline", self.underline)) if on]
        styles = []
        for layer, colour, prop in (("fg", self.fg, "color"), ("bg", self.bg, "background-color")):
            if isinstance(colour, int):
                classes.append(f"ansi-{layer}-{colour}")
            elif isinstance(colour, str):
                styles.append(f"{prop}:{colour}")
        out = f' class="{" ".join(classes)}"' if classes else ""
        return out + (f' style="{";".join(styles)}"' if styles else "")


_PLAIN = _Style()


def _palette(n: int, layer: str) -> Colour:
    """Colour n of the 256-colour palette: the first 16 as their SGR classes."""
    if n < 8:
        return (30 if layer == "fg" else 40) + n
    if n < 16:
        return (90 if layer == "fg" else 100) + n - 8
    if n < 232:
        levels = (0, 95, 135, 175, 215, 255)
        n -= 16
        return _hex(levels[n // 36], levels[n // 6 % 6], levels[n % 6])
    grey = 8 + 10 * (n - 232)
    return _hex(grey, grey, grey)


def _hex(r: int, g: int, b: int) -> str:
    return f"#{r:02x}{g:02x}{b:02x}"


def _extended(args: list[int | None], layer: str) -> tuple[Colour, int] | None:
    """The colour of `38;5;n` / `38;2;r;g;b` (args after the 38 or 48), and args used."""
    if len(args) >= 2 and args[0] == 5 and args[1] is not None and args[1] < 256:
        return _palette(args[1], layer), 2
    if len(args) >= 4 and args[0] == 2:
        r, g, b = args[1:4]
        if r is not None and g is not None and b is not None and max(r, g, b) < 256:
            return _hex(r, g, b), 4
    return None


def _simple(style: _Style, code: int | None) -> _Style:
    """The style after one SGR code that takes no arguments."""
    match code:
        case None | 0:
            return _PLAIN
        case 1:
            return replace(style, bold=True)
        case 2:
            return replace(style, dim=True)
        case 3:
            return replace(style, italic=True)
        case 4:
            return replace(style, underline=True)
        case 22:  # "normal intensity" ends both bold and dim
            return replace(style, bold=False, dim=False)
        case 23:
            return replace(style, italic=False)
        case 24:
            return replace(style, underline=False)
        case 39:
            return replace(style, fg=None)
        case 49:
            return replace(style, bg=None)
    if 30 <= code <= 37 or 90 <= code <= 97:
        return replace(style, fg=code)
    if 40 <= code <= 47 or 100 <= code <= 107:
        return replace(style, bg=code)
    return style  # blink, inverse, fonts …: not shown


def _apply(style: _Style, params: str) -> _Style:
    """The style after one SGR sequence's parameters (ESC[params m)."""
    for codes, colons in _groups(params):
        i = 0
        while i < len(codes):
            code = codes[i]
            i += 1
            if code in (38, 48):
                layer = "fg" if code == 38 else "bg"
                found = _extended(codes[i:], layer)
                if found is None:
                    break  # malformed: like xterm, ignore the rest of the group
                colour = found[0]
                style = replace(style, fg=colour) if code == 38 else replace(style, bg=colour)
                i += found[1]
            else:
                style = _simple(style, code)
            if colons:
                break  # "4:3" is one code with its sub-parameter (a curly underline)
    return style


def _groups(params: str) -> Iterator[tuple[list[int | None], bool]]:
    """The codes of an SGR sequence: runs of `;`-separated codes (`38;5;n` spans three),
    and each `:`-separated code with its sub-parameters (`38:2::r:g:b`), marked True."""
    plain: list[int | None] = []
    for part in params.split(";"):
        if ":" not in part:
            plain.append(_number(part))
            continue
        if plain:
            yield plain, False
            plain = []
        subs = [_number(s) for s in part.split(":")]
        if len(subs) == 6 and subs[1] == 2:
            del subs[2]  # 38:2:<colour space id>:r:g:b
        yield subs, True
    if plain:
        yield plain, False


def _number(param: str) -> int | None:
    """A parameter's value; a run of digits longer than any meaningful one means nothing
    (and Python refuses to parse one of thousands of digits)."""
    if not param:
        return None
    return int(param) if len(param) <= 5 else 1 << 20


def _line(text: str, style: _Style) -> tuple[str, _Style]:
    """One line as HTML, and the style it leaves for the next line."""
    # pieces of text between carriage returns, each with the style it was written in;
    # the styles of every piece apply, though only the last piece's text is kept
    pieces: list[list[tuple[str, _Style]]] = [[]]
    at = 0
    for m in _TOKEN.finditer(text):
        if m.start() > at:
            pieces[-1].append((text[at : m.start()], style))
        at = m.end()
        if m["cr"]:
            pieces.append([])
        elif m["final"] == "m" and not m["inter"] and _SGR_PARAMS.fullmatch(m["params"]):
            style = _apply(style, m["params"])
    if at < len(text):
        pieces[-1].append((text[at:], style))
    # a trailing "\r" (from "\r\n" or a last progress update) overwrote nothing yet
    shown = next((p for p in reversed(pieces) if p), [])
    out = []
    for run, run_style in _merged(shown):
        escaped = html.escape(run)
        out.append(
            f"<span{run_style.attributes()}>{escaped}</span>" if run_style != _PLAIN else escaped
        )
    return "".join(out), style


def _merged(runs: list[tuple[str, _Style]]) -> Iterator[tuple[str, _Style]]:
    """Adjacent runs in the same style as one (ESC[31m ESC[31m is still one span)."""
    text: list[str] = []
    current = _PLAIN
    for run, style in runs:
        if style != current and text:
            yield "".join(text), current
            text = []
        text.append(run)
        current = style
    if text:
        yield "".join(text), current


def to_html(text: str) -> str:
    """The text HTML-escaped, its ANSI colours as spans, other escape sequences dropped.

    Line breaks stay "\\n" (show it in a `<pre>`); a style goes on past a line break, as in
    a terminal, each line opening its own spans and closing them at its end.
    """
    style = _PLAIN
    lines = []
    for line in text.split("\n"):
        shown, style = _line(line, style)
        lines.append(shown)
    return "\n".join(lines)


# The palette of the 16 colours, as CSS variables a theme can override (a dark theme may
# want lighter blues); values are VS Code's terminal colours, legible on white and black.
_NAMES = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
_NORMAL = ("#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5")
_BRIGHT = ("#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff")


def _css() -> str:
    rules = [
        ".ansi-bold { font-weight: bold; }",
        ".ansi-dim { opacity: 0.7; }",
        ".ansi-italic { font-style: italic; }",
        ".ansi-underline { text-decoration: underline; }",
    ]
    for i, name in enumerate(_NAMES):
        for offset, prefix, value in ((0, "", _NORMAL[i]), (60, "bright-", _BRIGHT[i])):
            var = f"var(--ansi-{prefix}{name}, {value})"
            rules.append(f".ansi-fg-{30 + offset + i} {{ color: {var}; }}")
            rules.append(f".ansi-bg-{40 + offset + i} {{ background-color: {var}; }}")
    return "\n".join(rules) + "\n"


ANSI_CSS: str = _css()
"""The stylesheet rules of the classes `to_html` writes (colours as overridable variables)."""
