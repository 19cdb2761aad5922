# -*- test-case-name: tests.test_policy_service -*-
"""
What the policy holds back now, across the pages in use: running totals
for ``/metrics`` and the status page, kept as pages are judged (never
summed at scrape time), and the file requests refused.
"""

from __future__ import annotations

import attrs

from proxypypi.policy.decision import REASONS, Held


@attrs.define(eq=False)
class Ledger:
    """
    The judgements of the pages memory knows, by project, and their sum.

    :ivar counts: files withheld (or, reporting only, that would be) by
        reason, in the order of `REASONS`.
    :ivar refused: file requests refused (or that would be), by reason.
    """

    counts: list[int] = attrs.field(factory=lambda: [0] * len(REASONS))
    refused: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(REASONS, 0))
    _held: dict[str, Held] = attrs.field(factory=dict)

    def note(self, name: str, held: Held | None) -> None:
        """
        ``name``'s page is now judged ``held`` (``None``: forgotten).
        """
        old = self._held.pop(name, None)
        if old is not None:
            for i, n in enumerate(old.counts):
                self.counts[i] -= n
        if held is not None and held.total:
            self._held[name] = held
            for i, n in enumerate(held.counts):
                self.counts[i] += n

    def refuse(self, reason: str) -> None:
        self.refused[reason] += 1

    def by_reason(self) -> dict[str, int]:
        return dict(zip(REASONS, self.counts, strict=True))

    def projects(self) -> int:
        """
        Pages with anything held back.
        """
        return len(self._held)

    def next_release(self) -> tuple[float, str] | None:
        """
        The first release held by the cooldown to come of age, of every
        page in use: when, and ``"project version"``.
        """
        found = [h.next_release for h in self._held.values() if h.next_release is not None]
        return min(found) if found else None
