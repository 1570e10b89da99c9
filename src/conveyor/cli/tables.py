"""Tables that fit the terminal: columns dropped by priority, values never cut.

Rich shrinks a table wider than the console by cutting its cells (`depl…`,
`envi…`); a release id or a state cut short is worse than no column at all. So a
table here is laid out plain (no borders, like `kubectl get`), its values never
wrap except in free-text columns, and the least needed columns are dropped until
it fits the console's width (80 columns when piped, unless COLUMNS says more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """A column: its header, when it goes, and whether its text may wrap."""

    header: str
    drop: int = 0  # 0: always shown; otherwise the highest goes first when space lacks
    wrap: bool = False  # free text (a reason, a note): wraps onto more lines, never cut
    min_width: int = 16  # for a wrapping column: the narrowest it may get


def fitted(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[RenderableType]],
    *,
    title: str | None = None,
) -> Table:
    """The table with as many columns as fit `console`'s width, most needed first."""
    widths = [
        max([_width(c.header), *(_width(row[i]) for row in rows)]) for i, c in enumerate(columns)
    ]
    needs = [min(w, c.min_width) if c.wrap else w for c, w in zip(columns, widths, strict=True)]
    shown = list(range(len(columns)))
    while True:
        droppable = [i for i in shown if columns[i].drop > 0]
        narrowest = sum(needs[i] for i in shown) + 2 * (len(shown) - 1)
        if not droppable or narrowest <= console.width:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    table = Table(box=None, pad_edge=False, header_style="bold", title=title)
    for i in shown:
        if columns[i].wrap:
            table.add_column(columns[i].header, overflow="fold", min_width=needs[i])
        else:
            table.add_column(columns[i].header, no_wrap=True, min_width=widths[i])
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table


def _width(cell: RenderableType) -> int:
    text = Text.from_markup(cell) if isinstance(cell, str) else cell
    if isinstance(text, Text):
        return max((line.cell_len for line in text.split()), default=0)
    return 0
