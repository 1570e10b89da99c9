"""Checks of what a page looks like that every page's test makes."""

from __future__ import annotations

from tests.web.browser import Visitor


def no_overflow(visitor: Visitor) -> None:
    """Nothing wider than the screen: not the page, nor a table clipped inside its card."""
    width = visitor.page.evaluate("document.documentElement.scrollWidth")
    assert width <= visitor.page.viewport_size["width"], f"page is {width}px wide"
    wide = visitor.page.evaluate(
        "Array.from(document.querySelectorAll('table, pre, dl, .card, dialog'))"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1"
        " || (getComputedStyle(e).overflowX !== 'visible' && e.tagName !== 'PRE'"
        " && e.scrollWidth > e.clientWidth + 1)).map(e => e.outerHTML.slice(0, 80))"
    )
    assert wide == [], wide
