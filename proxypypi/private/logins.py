# -*- test-case-name: tests.test_logins -*-
"""
How many password checks may wait, and who may ask for one.

bcrypt is slow on purpose, and runs on two threads: without a bound, a
flood of wrong passwords queues up ahead of everyone, and a valid user's
first login waits behind all of them (200 bad logins made one wait 8 s).
So a login that needs bcrypt is refused at once, with an answer that says
when to come back, when

- too many checks are already waiting (``503``, ``Retry-After``): a
  client retries in a second instead of queueing for many; or
- its client address failed too often lately (``429``, ``Retry-After``
  until its window ends): guessing passwords from one address costs the
  guesser time, not the server.

Credentials that checked out recently are remembered by the checker and
cost no bcrypt, so they always pass, whatever the load or the address:
a flood never locks out users already logged in.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Protocol

import attrs
from twisted.internet.interfaces import IReactorTime

#: Password checks that may wait for a bcrypt thread at once (two threads
#: each take up to a quarter second per check at common costs).
MAX_PENDING_LOGINS = 16

#: Failed logins from one client address that are allowed in a window.
MAX_FAILED_LOGINS = 10

#: Seconds of that window: a client that failed too often waits until its
#: window ends.
FAILURE_WINDOW = 60.0

#: Client addresses whose failures are remembered (the oldest forgotten
#: first), so that spoofed or countless addresses cannot fill memory.
MAX_REMEMBERED_CLIENTS = 10_000


@attrs.frozen
class TryLater:
    """
    A login that was not checked: the answer and when to come back.

    :ivar code: ``429`` (this client failed too often) or ``503`` (too
        many checks waiting).
    :ivar message: one line for the client's user.
    :ivar retry_after: whole seconds, for ``Retry-After``.
    """

    code: int
    message: str
    retry_after: int


class Remembering(Protocol):
    """
    What the gate needs of the password checker.
    """

    @property
    def pending(self) -> int:
        """
        Checks waiting or running.
        """

    def remembers(self, user: bytes, password: bytes) -> bool:
        """
        Whether these credentials checked out recently (no bcrypt needed).
        """


@attrs.define(eq=False)
class LoginGate:
    """
    Admits logins to the password checker, or says when to try again.

    :ivar checker: the password checker, asked how many checks wait and
        which credentials it remembers.
    """

    checker: Remembering
    clock: IReactorTime
    max_pending: int = MAX_PENDING_LOGINS
    max_failures: int = MAX_FAILED_LOGINS
    window: float = FAILURE_WINDOW
    max_clients: int = MAX_REMEMBERED_CLIENTS
    #: client -> (start of its window, failures in it)
    _failures: OrderedDict[str, tuple[float, int]] = attrs.field(
        factory=OrderedDict, init=False
    )

    def admit(self, user: bytes, password: bytes, client: str | None) -> TryLater | None:
        """
        ``None`` when the login may be checked now, else the answer to give.

        :param client: who asks (an address), or ``None`` when unknown.
        """
        if self.checker.remembers(user, password):
            return None
        wait = self._blocked_for(client)
        if wait is not None:
            return TryLater(
                429,
                f"too many failed logins from this address; try again in {wait} seconds",
                wait,
            )
        if self.checker.pending >= self.max_pending:
            return TryLater(503, "too many logins are being checked; try again in a second", 1)
        return None

    def failed(self, client: str | None) -> None:
        """
        A login from ``client`` was checked and failed.
        """
        if client is None:
            return
        now = self.clock.seconds()
        start, count = self._failures.pop(client, (now, 0))
        if now >= start + self.window:
            start, count = now, 0
        self._failures[client] = (start, count + 1)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def _blocked_for(self, client: str | None) -> int | None:
        """
        Seconds ``client`` must wait, or ``None`` when it may try now.
        """
        entry = self._failures.get(client) if client is not None else None
        if entry is None:
            return None
        start, count = entry
        left = start + self.window - self.clock.seconds()
        if count < self.max_failures or left <= 0:
            return None
        return max(1, math.ceil(left))
