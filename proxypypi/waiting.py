# -*- test-case-name: tests.test_waiting -*-
"""
One operation, many callers: the pattern behind every single-flight fetch
of the cache (a page refresh, the project list, a download's headers and
its end).

Each caller gets a Deferred of its own, so one caller cancelling its wait,
or adding callbacks that change the result it sees, never touches the
operation or the other callers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@attrs.define(eq=False)
class Waiters(Generic[T]):
    """
    Callers waiting for one outcome, which comes once.
    """

    _waiting: list[Deferred[T]] = attrs.field(factory=list)
    _outcome: tuple[T | Failure] | None = None

    @property
    def fired(self) -> bool:
        """
        Whether the outcome is known.
        """
        return self._outcome is not None

    def wait(self) -> Deferred[T]:
        """
        A new Deferred with the outcome: at once when it is known, else
        when `fire` is called.
        """
        if self._outcome is None:
            d: Deferred[T] = Deferred()
            self._waiting.append(d)
            return d
        (outcome,) = self._outcome
        if isinstance(outcome, Failure):
            return fail(outcome)
        return succeed(outcome)

    def fire(self, outcome: T | Failure) -> None:
        """
        The outcome is known: tell every caller waiting, and every later
        one.  Only the first outcome counts.
        """
        if self._outcome is not None:
            return
        self._outcome = (outcome,)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)


@attrs.define(eq=False)
class SingleFlight(Generic[K, T]):
    """
    At most one operation per key at a time: callers for a key whose
    operation is running share its outcome instead of starting another.
    """

    _flights: dict[K, Waiters[T]] = attrs.field(factory=dict)

    def run(self, key: K, operation: Callable[[], Deferred[T]]) -> Deferred[T]:
        """
        The outcome of the operation for ``key``: the one running, or
        ``operation()`` started now.
        """
        waiters = self._flights.get(key)
        if waiters is None:
            waiters = self._flights[key] = Waiters()
            operation().addBoth(self._landed, key, waiters)
        return waiters.wait()

    def landed(self, key: K) -> Deferred[None]:
        """
        Fires once the operation for ``key``, if one is running, has landed,
        whatever its outcome: for what must not overlap it.
        """
        waiters = self._flights.get(key)
        if waiters is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        waiters.wait().addBoth(lambda _: done.callback(None))
        return done

    def count(self) -> int:
        """
        How many operations are in flight.
        """
        return len(self._flights)

    def running(self, key: K) -> bool:
        """
        Whether an operation for ``key`` is in flight.
        """
        return key in self._flights

    def _landed(self, outcome: T | Failure, key: K, waiters: Waiters[T]) -> None:
        del self._flights[key]
        waiters.fire(outcome)
