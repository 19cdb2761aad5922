# -*- test-case-name: tests.test_downloads -*-
"""
Where a file comes from: an `Origin` is a URL an upstream page listed (or
the same path on another mirror of that upstream's group), with the health
of the member behind it.  The pool (`proxypypi.upstream.pool.Pool.origins`)
hands the cache origins that already know whom to report to, so downloads
never need the pool itself.
"""

from __future__ import annotations

import typing

import attrs
from twisted.web.iweb import IAgent


class OriginHealth(typing.Protocol):
    """
    Whom a download tells how an origin behaved (in practice the health of
    the upstream member behind it, `proxypypi.upstream.health.Health`).
    """

    @property
    def usable(self) -> bool:
        """Whether the origin is in rotation; others are tried last."""

    def request_started(self) -> None:
        """A request to the origin begins (it counts as load)."""

    def request_ended(self) -> None:
        """That request is over, whatever its outcome."""

    def report_success(self, latency: float | None = None) -> None:
        """The origin served the file (``latency``: seconds to headers)."""

    def report_failure(self, reason: str, fatal: bool = False) -> None:
        """The origin failed; ``fatal`` when it cannot be reached at all."""


@attrs.frozen
class Origin:
    """
    One place a file can be fetched from: a URL an upstream page listed
    (or the same path on another member of that upstream's group).

    :ivar health: told of each request to this origin and its outcome.
    :ivar idle_timeout: seconds without a byte mid-body before this origin
        is abandoned; ``None`` uses the download's own.
    """

    url: str
    agent: IAgent
    first_byte_timeout: float = 15.0
    health: OriginHealth | None = attrs.field(default=None, eq=False)
    idle_timeout: float | None = None
