# -*- test-case-name: tests.test_index -*-
"""
Names no upstream has, remembered for the negative TTL, so that a client
asking again and again for a project that does not exist (a typo in a
requirements file, a private name before its upload) does not send each
request to every upstream.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime


@attrs.define
class NotFound:
    """
    When each name was last found nowhere; bounded by time alone: names
    are kept in the order they were noted, so those past the TTL are
    dropped from the front as new ones come, however many there are.
    """

    clock: IReactorTime
    ttl: float
    _since: dict[str, float] = attrs.field(factory=dict)

    def recent(self, name: str) -> bool:
        """
        Whether ``name`` was found nowhere within the TTL.
        """
        since = self._since.get(name)
        return since is not None and self.clock.seconds() - since < self.ttl

    def note(self, name: str) -> None:
        """
        ``name`` was found nowhere now; names whose TTL is over go.
        """
        now = self.clock.seconds()
        self._since.pop(name, None)
        self._since[name] = now
        expired = []
        for other, since in self._since.items():
            if now - since < self.ttl:
                break
            expired.append(other)
        for other in expired:
            del self._since[other]

    def clear(self, name: str) -> None:
        """
        ``name`` was found after all.
        """
        self._since.pop(name, None)

    def names(self) -> list[str]:
        return list(self._since)
