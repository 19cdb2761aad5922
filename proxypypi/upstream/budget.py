# -*- test-case-name: tests.test_hostile_upstreams -*-
"""
The memory page fetches may hold together.

Each page body is bounded (``--max-page-bytes``), but a hostile upstream
answering many requests at once multiplies that bound.  So the bodies of
all page fetches in flight share one `PageBudget`: each chunk received is
taken from it, and given back once the page is parsed.  A fetch that would
take the budget past its limit while others hold part of it is refused
(`Overloaded`, which does not count against the member's health); a fetch
alone may always go up to its own page limit, so one large page is never
refused for want of room.

Decoding and parsing run in the two page threads (see
`proxypypi.service.compose`), so at most two pages are expanded at once,
each to at most ``--max-page-bytes``.
"""

from __future__ import annotations

import attrs

from proxypypi.upstream.fetch import FetchError

#: Bytes of page bodies all page fetches may hold at once.
PAGE_BYTES_IN_FLIGHT = 64 * 1024 * 1024


class Overloaded(FetchError):
    """
    The pages being fetched hold the whole budget: this one must wait for
    a later request.
    """


@attrs.define(eq=False)
class PageBudget:
    """
    Bytes of page bodies held in memory across all page fetches.
    """

    limit: int = PAGE_BYTES_IN_FLIGHT
    used: int = 0

    def share(self) -> Share:
        """
        A new fetch's share, empty; `Share.release` it when the fetch ends.
        """
        return Share(self)


@attrs.define(eq=False)
class Share:
    """
    What one page fetch holds of a `PageBudget`.
    """

    budget: PageBudget
    held: int = 0

    def take(self, size: int) -> None:
        """
        :raises Overloaded: when ``size`` more would pass the budget's
            limit while other fetches hold part of it.
        """
        budget = self.budget
        if budget.used + size > budget.limit and budget.used > self.held:
            raise Overloaded(
                f"page fetches in flight hold {budget.used} bytes, the limit of "
                f"{budget.limit}; retry shortly"
            )
        budget.used += size
        self.held += size

    def release(self) -> None:
        self.budget.used -= self.held
        self.held = 0
