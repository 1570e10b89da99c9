"""The ACME HTTP-01 answers this host's router serves on its shared HTTP port.

Two sources: the server's orders (one per app and environment, answered by every host
of it: `DesiredState.challenges`) and this agent's own orders (`acme.py`, for a server
that did not order). The router gets their union, and the agent reports which tokens it
answers (`ObservedState.challenges`): the server asks the CA to validate once they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["ChallengeAnswers"]


class ChallengeAnswers:
    """What the router answers now, and from where."""

    def __init__(
        self, publish: Callable[[dict[str, str]], Awaitable[None]], changed: Callable[[], None]
    ) -> None:
        self.publish = publish  # Router.challenges at the shared HTTP port
        self.changed = changed  # a report is due
        self.served: dict[str, str] = {}
        self.own: dict[str, str] = {}
        self.published: dict[str, str] | None = None

    def wanted(self) -> dict[str, str]:
        return {**self.served, **self.own}

    async def from_desired(self, answers: dict[str, str]) -> None:
        """The desired state's answers (published only when something changed)."""
        self.served = dict(answers)
        if self.wanted() != (self.published or {}):
            await self._publish()

    async def from_own_order(self, answers: dict[str, str]) -> None:
        """The answers of this agent's own order, published at once."""
        self.own = dict(answers)
        await self._publish()

    def answering(self) -> list[str]:
        return sorted(self.published or {})

    async def _publish(self) -> None:
        answers = self.wanted()
        await self.publish(answers)
        self.published = answers
        self.changed()
