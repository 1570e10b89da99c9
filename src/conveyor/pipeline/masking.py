"""Replacing secret values by `***` before any text reaches a log."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Values this short would mask ordinary words; they are refused when stored.
MIN_SECRET_LENGTH = 4


class Masker:
    """Masks every given secret value, longest first, in any text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        # also mask each line of a multi-line secret (a PEM key printed line by line)
        for value in list(values):
            values.extend(
                line for line in value.splitlines() if len(line.strip()) >= MIN_SECRET_LENGTH
            )
        unique = sorted(set(values), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in unique)) if unique else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
